// LayerNorm over the last dim: y = (x - mean) / sqrt(var + eps) * w + b, with the biased
// variance mean((x - mean)^2) as PyTorch and the CPU backend compute it (two passes, not
// E[x^2] - mean^2, which cancels badly for large means). One workgroup per row.

struct Params {
    rows: u32,
    d: u32,
    eps_bits: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
    var s = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        s += x[base + i];
    }
    let mean = reduce_sum(lid, s) / f32(p.d);
    var ss = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        let c = x[base + i] - mean;
        ss += c * c;
    }
    let inv = 1.0 / sqrt(reduce_sum(lid, ss) / f32(p.d) + bitcast<f32>(p.eps_bits));
    for (var i = lid; i < p.d; i += WG) {
        y[base + i] = (x[base + i] - mean) * inv * w[i] + b[i];
    }
}
