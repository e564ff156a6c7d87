// Softmax over the last dim, max-subtracted for range: y = exp(x - max) / sum(exp(x - max)).
// One workgroup per row; max and sum each reduced in workgroup memory.

struct Params {
    rows: u32,
    d: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.d;
    // -inf is not a WGSL literal; the lowest finite f32 works as the identity of max here.
    var mx = -3.4028235e38;
    for (var i = lid; i < p.d; i += WG) {
        mx = max(mx, x[base + i]);
    }
    red[lid] = mx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        sum += exp(x[base + i] - m);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var i = lid; i < p.d; i += WG) {
        y[base + i] = exp(x[base + i] - m) * inv;
    }
}
