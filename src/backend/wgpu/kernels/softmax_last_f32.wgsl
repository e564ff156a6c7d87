// Softmax over the last dim, max-subtracted for range: y = exp(x - max) / sum(exp(x - max)).
// One workgroup per row; max and sum are one reduction each.
// Reductions: reduce_sum/reduce_max come from reduce_workgroup.wgsl or reduce_subgroup.wgsl,
// appended when the pipeline is created.

struct Params {
    rows: u32,
    d: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

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
    // -inf is not a WGSL literal; the lowest finite f32 works as the identity of max here. As
    // bits: Chrome's compiler reads the decimal -3.4028235e38 exactly and refuses it as
    // out of f32 range (found by the browser self-test), naga rounds it.
    var mx = bitcast<f32>(0xff7fffffu);
    for (var i = lid; i < p.d; i += WG) {
        mx = max(mx, x[base + i]);
    }
    let m = reduce_max(lid, mx);
    var sum = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        sum += exp(x[base + i] - m);
    }
    let inv = 1.0 / reduce_sum(lid, sum);
    for (var i = lid; i < p.d; i += WG) {
        y[base + i] = exp(x[base + i] - m) * inv;
    }
}
