// Scaled dot-product attention for prefill (s queries) and decode (s = 1), grouped-query aware:
//   out[b, h, i, :] = softmax_j(q[b, h, i, :] . k[b, h / g, j, :] * scale + mask[b, i, j]) v[b, h / g, j, :]
// with g = heads / kv_heads. Keys and values are read in place from a preallocated KV cache:
// their sequence dimension has room for `cap` positions, of which the first `t` are used, so
// appending a token never copies the cache. The mask (0 or -inf) is added when has_mask is 1;
// mask[b, i, j] is at b * mask_batch_stride + i * mask_row_stride + j, so one buffer serves
// the causal prefill mask [s, t] (batch stride 0) and the vision tower's per-image key mask
// [b, 1, 1, t] for padded patches (row stride 0). Decode needs none.
//
// One workgroup per (b, h, i) query row, in three phases over a scratch row of t scores:
// scores and their max, exponentials and their sum, then the weighted sum of values with the
// invocations striding over the head dimension.
// Reductions: reduce_sum/reduce_max come from reduce_workgroup.wgsl or reduce_subgroup.wgsl,
// appended when the pipeline is created.

struct Params {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    s: u32,
    t: u32,
    d: u32,
    cap: u32,
    has_mask: u32,
    mask_batch_stride: u32,
    mask_row_stride: u32,
    scale: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

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
    let i = row % p.s;
    let h = (row / p.s) % p.heads;
    let b = row / (p.s * p.heads);
    let kvh = h / (p.heads / p.kv_heads);
    let kv0 = (b * p.kv_heads + kvh) * p.cap * p.d;
    let q0 = row * p.d;
    let sc0 = row * p.t;
    let scale = bitcast<f32>(p.scale);

    // Finite floor for the running max: a fully masked row gives zeros, not NaN.
    var m = -3.0e38;
    for (var j = lid; j < p.t; j += WG) {
        var acc = 0.0;
        let k0 = kv0 + j * p.d;
        for (var c = 0u; c < p.d; c++) {
            acc += q[q0 + c] * k[k0 + c];
        }
        var sc = acc * scale;
        if (p.has_mask == 1u) {
            sc += mask[b * p.mask_batch_stride + i * p.mask_row_stride + j];
        }
        scores[sc0 + j] = sc;
        m = max(m, sc);
    }
    let mx = reduce_max(lid, m);

    var sum = 0.0;
    for (var j = lid; j < p.t; j += WG) {
        let e = exp(scores[sc0 + j] - mx);
        scores[sc0 + j] = e;
        sum += e;
    }
    let total = reduce_sum(lid, sum);
    // Every invocation reads every score below.
    storageBarrier();

    let inv = select(0.0, 1.0 / total, total > 0.0);
    for (var c = lid; c < p.d; c += WG) {
        var acc = 0.0;
        for (var j = 0u; j < p.t; j++) {
            acc += scores[sc0 + j] * v[kv0 + j * p.d + c];
        }
        out[q0 + c] = acc * inv;
    }
}
