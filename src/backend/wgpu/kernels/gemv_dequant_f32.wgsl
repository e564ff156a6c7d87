// Fused dequantize-and-multiply for packed int-N weights (decode GEMV):
//   y[m, n] = sum_g scale[n, g] * (sum_{i in g} q[n, i] * x[m, i] - zero[n, g] * sum_{i in g} x[m, i])
// which is sum_i x[m, i] * (q[n, i] - zero[n, g]) * scale[n, g], the layout of
// src/quant/packed.rs: each row of W [n, k] is a little-endian bit stream of u32 words, value i
// at bit i * BITS; 32 values of any width are exactly BITS words (the decode unit here).
// Scales and zeros are f16 pairs in u32 words (unpack2x16float), so no shader-f16 is needed.
// One workgroup per (ROWS output rows, m). Its invocations stride over 32-value blocks; each
// loads a block of x (and its sum) once and applies it to all ROWS rows, and the ROWS row
// sums share one vec4 reduction (in workgroup memory, or with subgroup operations where the
// device has them). Measured on an H200 at 4096 -> 11008 (`relvqa bench kernels`): one row
// per workgroup ran at 182 GB/s, set by the reduction with only 2 blocks per invocation; this
// layout at 649 GB/s, 1.35x the f32 GEMV; an invocation per vec4 of x (coalesced x, u32
// weight loads, as gemv_f32.wgsl) at 474 GB/s, more loads per weight byte.
// Reductions: reduce_sum/reduce_max come from reduce_workgroup.wgsl or reduce_subgroup.wgsl,
// appended when the pipeline is created.

struct Params {
    n: u32,
    k: u32,
    m: u32,
    group: u32,
}

override BITS: u32;
const WG: u32 = 64u;
// Rows per workgroup: the lanes of the vec4 accumulator (gemv_dequant_f32.rs sizes the grid).
const ROWS: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> words: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read> zeros: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn half_of(word: u32, i: u32) -> f32 {
    return unpack2x16float(word)[i & 1u];
}

// Level i (0..32) of a block whose BITS words are in w; a 3-bit value may straddle two words.
fn level(w: ptr<function, array<u32, 8>>, i: u32) -> f32 {
    let bit = i * BITS;
    let wi = bit >> 5u;
    let sh = bit & 31u;
    var q = (*w)[wi] >> sh;
    if (sh + BITS > 32u) {
        q |= (*w)[wi + 1u] << (32u - sh);
    }
    return f32(q & ((1u << BITS) - 1u));
}

// The dot product of block b of row n with the block of x in xs (before scale and zero).
fn block_dot(n: u32, b: u32, xs: ptr<function, array<vec4<f32>, 8>>) -> f32 {
    let base = n * (p.k / 32u) * BITS + b * BITS;
    var dq = 0.0;
    if (BITS == 4u) {
        // A block is one vec4 of words, eight nibbles a word, values in order: word j
        // holds values 8j..8j+7, i.e. x vec4s 2j and 2j+1. Masks, no per-value indexing.
        let v4 = words[base >> 2u];
        for (var j = 0u; j < 4u; j++) {
            let wj = vec4<u32>(v4[j]);
            let lo = vec4<f32>((wj >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
            let hi = vec4<f32>((wj >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
            dq += dot(lo, (*xs)[2u * j]) + dot(hi, (*xs)[2u * j + 1u]);
        }
    } else if (BITS == 8u) {
        // Two vec4s of words, four bytes a word: word j holds values 4j..4j+3.
        let v0 = words[base >> 2u];
        let v1 = words[(base >> 2u) + 1u];
        for (var j = 0u; j < 4u; j++) {
            let q0 = vec4<f32>((vec4<u32>(v0[j]) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u));
            let q1 = vec4<f32>((vec4<u32>(v1[j]) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u));
            dq += dot(q0, (*xs)[j]) + dot(q1, (*xs)[4u + j]);
        }
    } else {
        // 3 and 2 bits: a block of BITS words may start mid-vec4 and a 3-bit value may
        // straddle two words, so gather the words and extract level by level.
        var w: array<u32, 8>;
        for (var j = 0u; j < BITS; j++) {
            let at = base + j;
            w[j] = words[at >> 2u][at & 3u];
        }
        for (var v = 0u; v < 8u; v++) {
            let q = vec4<f32>(level(&w, 4u * v), level(&w, 4u * v + 1u), level(&w, 4u * v + 2u), level(&w, 4u * v + 3u));
            dq += dot(q, (*xs)[v]);
        }
    }
    return dq;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row0 = (wid.x + wid.y * nwg.x) * ROWS;
    let m = wid.z;
    // Uniform across the workgroup, so the reduction below stays in uniform control flow.
    if (row0 >= p.n) {
        return;
    }
    let blocks = p.k / 32u;
    let gpr = p.k / p.group;
    let bpg = p.group / 32u;
    let xrow = m * (p.k / 4u);
    var acc = vec4<f32>(0.0);
    for (var b = lid; b < blocks; b += WG) {
        var xs: array<vec4<f32>, 8>;
        var sx4 = vec4<f32>(0.0);
        for (var v = 0u; v < 8u; v++) {
            xs[v] = x[xrow + b * 8u + v];
            sx4 += xs[v];
        }
        let sx = sx4.x + sx4.y + sx4.z + sx4.w;
        for (var r = 0u; r < ROWS; r++) {
            let n = row0 + r;
            if (n < p.n) {
                let g = n * gpr + b / bpg;
                acc[r] += half_of(scales[g >> 1u], g) * (block_dot(n, b, &xs) - half_of(zeros[g >> 1u], g) * sx);
            }
        }
    }
    let total = reduce_sum4(lid, acc);
    if (lid < ROWS && row0 + lid < p.n) {
        y[m * p.n + row0 + lid] = total[lid];
    }
}
