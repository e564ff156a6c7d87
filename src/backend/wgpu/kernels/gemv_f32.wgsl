// Dense f32 GEMV for decode: y [m, n] = x [m, k] . W^T with W [n, k] (a linear layer's weight)
// and k a multiple of 4, read as vec4s. The same structure as gemv_dequant_f32.wgsl (one
// workgroup per (n, m), invocations striding over k, one reduction), so the two compare on
// equal terms in `relvqa bench kernels`.
// Reductions: reduce_sum/reduce_max come from reduce_workgroup.wgsl or reduce_subgroup.wgsl,
// appended when the pipeline is created.

struct Params {
    n: u32,
    k: u32,
    m: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = wid.x + wid.y * nwg.x;
    let m = wid.z;
    if (n >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    var acc = 0.0;
    for (var i = lid; i < k4; i += WG) {
        acc += dot(w[n * k4 + i], x[m * k4 + i]);
    }
    let total = reduce_sum(lid, acc);
    if (lid == 0u) {
        y[m * p.n + n] = total;
    }
}
