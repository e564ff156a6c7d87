// Dense f32 matmul, C [batch, m, n] = A [batch, m, k] · B, with B either [k, n] or, when
// b_trans is 1, [n, k] (a linear layer's weight, read without a transpose copy). B is shared by
// all batches when b_batched is 0. B is f32 (B_F16 = 0) or f16 pairs in u32 words, low half
// first (B_F16 = 1: a weight kept in half the memory), widened as it is staged. 16x16 tiles
// staged in workgroup memory; edges are padded with zeros, so no dimension needs to be a
// multiple of 16.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    b_trans: u32,
    b_batched: u32,
}

override B_F16: u32;
const T: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

fn b_at(e: u32) -> f32 {
    if (B_F16 == 1u) {
        return unpack2x16float(b[e >> 1u])[e & 1u];
    }
    return bitcast<f32>(b[e]);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * T + lid.y;
    let col = wid.x * T + lid.x;
    let z = wid.z;
    let a0 = z * p.m * p.k;
    let b0 = select(0u, z * p.k * p.n, p.b_batched == 1u);
    var acc = 0.0;
    let tiles = (p.k + T - 1u) / T;
    for (var t = 0u; t < tiles; t++) {
        let ka = t * T + lid.x;
        var av = 0.0;
        if (row < p.m && ka < p.k) {
            av = a[a0 + row * p.k + ka];
        }
        ta[lid.y][lid.x] = av;
        let kb = t * T + lid.y;
        var bv = 0.0;
        if (col < p.n && kb < p.k) {
            var e = b0 + kb * p.n + col;
            if (p.b_trans == 1u) {
                e = b0 + col * p.k + kb;
            }
            bv = b_at(e);
        }
        tb[lid.y][lid.x] = bv;
        workgroupBarrier();
        for (var i = 0u; i < T; i++) {
            acc += ta[lid.y][i] * tb[i][lid.x];
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        c[z * p.m * p.n + row * p.n + col] = acc;
    }
}
