// Dense GEMV for decode: y [m, n] = x [m, k] . W^T with W [n, k] (a linear layer's weight).
// W is f32 (W_F16 = 0; k a multiple of 4) or f16 pairs in u32 words, low half first
// (W_F16 = 1; k a multiple of 8), read as vec4<u32> and widened with unpack2x16float, so half
// the bytes are read and no `shader-f16` is needed. Accumulation is f32 either way. The same structure as gemv_dequant_f32.wgsl (one
// workgroup per (n, m), invocations striding over k, one reduction), so the two compare on
// equal terms in `relvqa bench kernels`.
// Reductions: reduce_sum/reduce_max come from reduce_workgroup.wgsl or reduce_subgroup.wgsl,
// appended when the pipeline is created.

struct Params {
    n: u32,
    k: u32,
    m: u32,
}

override W_F16: u32;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
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
    if (W_F16 == 1u) {
        // One vec4 of words holds 8 weights: x vec4s 2i and 2i + 1.
        let k8 = p.k / 8u;
        for (var i = lid; i < k8; i += WG) {
            let v = w[n * k8 + i];
            let lo = vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
            let hi = vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
            acc += dot(lo, x[m * k4 + 2u * i]) + dot(hi, x[m * k4 + 2u * i + 1u]);
        }
    } else {
        for (var i = lid; i < k4; i += WG) {
            acc += dot(bitcast<vec4<f32>>(w[n * k4 + i]), x[m * k4 + i]);
        }
    }
    let total = reduce_sum(lid, acc);
    if (lid == 0u) {
        y[m * p.n + n] = total;
    }
}
