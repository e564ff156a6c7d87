// Elementwise a OP b with numpy broadcasting: the output [s0..s5] is contiguous, and each input
// is read through its own strides, 0 along a broadcast dimension (so a bias [n] against [m, n]
// has strides (.., 0, 1)). OP is a pipeline constant: 0 add, 1 sub, 2 mul.

struct Params {
    len: u32,
    s0: u32,
    s1: u32,
    s2: u32,
    s3: u32,
    s4: u32,
    s5: u32,
    a0: u32,
    a1: u32,
    a2: u32,
    a3: u32,
    a4: u32,
    a5: u32,
    b0: u32,
    b1: u32,
    b2: u32,
    b3: u32,
    b4: u32,
    b5: u32,
}

override OP: u32;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    if (idx >= p.len) {
        return;
    }
    var r = idx;
    let c5 = r % p.s5; r /= p.s5;
    let c4 = r % p.s4; r /= p.s4;
    let c3 = r % p.s3; r /= p.s3;
    let c2 = r % p.s2; r /= p.s2;
    let c1 = r % p.s1; r /= p.s1;
    let c0 = r;
    let av = a[c0 * p.a0 + c1 * p.a1 + c2 * p.a2 + c3 * p.a3 + c4 * p.a4 + c5 * p.a5];
    let bv = b[c0 * p.b0 + c1 * p.b1 + c2 * p.b2 + c3 * p.b3 + c4 * p.b4 + c5 * p.b5];
    var v: f32;
    if (OP == 0u) {
        v = av + bv;
    } else if (OP == 1u) {
        v = av - bv;
    } else {
        v = av * bv;
    }
    y[idx] = v;
}
