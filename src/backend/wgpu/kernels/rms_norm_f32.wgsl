// RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * w (Llama; the CPU backend's
// formula). One workgroup per row; the sum of squares is one reduction.
// Reductions: reduce_sum/reduce_max come from reduce_workgroup.wgsl or reduce_subgroup.wgsl,
// appended when the pipeline is created.

struct Params {
    rows: u32,
    d: u32,
    eps_bits: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

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
    var ss = 0.0;
    for (var i = lid; i < p.d; i += WG) {
        let v = x[base + i];
        ss += v * v;
    }
    let inv = 1.0 / sqrt(reduce_sum(lid, ss) / f32(p.d) + bitcast<f32>(p.eps_bits));
    for (var i = lid; i < p.d; i += WG) {
        y[base + i] = x[base + i] * inv * w[i];
    }
}
