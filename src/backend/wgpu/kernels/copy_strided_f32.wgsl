// Strided copy of 32-bit values:
//   out[out_offset + sum_i idx_i * o_i] = src[in_offset + sum_i idx_i * i_i]
// for every index `idx` of the shape (s0..s5, rank <= 6, unused leading dims are 1). One kernel
// serves every layout op of the backend: permute (permuted input strides), narrow (an input
// offset), cat (each input copied into its slice of the output), the KV-cache append (the new
// keys written at the cache's current length) and making a cache view contiguous.

struct Params {
    len: u32,
    in_offset: u32,
    out_offset: u32,
    s0: u32,
    s1: u32,
    s2: u32,
    s3: u32,
    s4: u32,
    s5: u32,
    i0: u32,
    i1: u32,
    i2: u32,
    i3: u32,
    i4: u32,
    i5: u32,
    o0: u32,
    o1: u32,
    o2: u32,
    o3: u32,
    o4: u32,
    o5: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

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
    // Peel the index from the innermost dimension outwards.
    var r = idx;
    let c5 = r % p.s5; r /= p.s5;
    let c4 = r % p.s4; r /= p.s4;
    let c3 = r % p.s3; r /= p.s3;
    let c2 = r % p.s2; r /= p.s2;
    let c1 = r % p.s1; r /= p.s1;
    let c0 = r;
    let i = p.in_offset + c0 * p.i0 + c1 * p.i1 + c2 * p.i2 + c3 * p.i3 + c4 * p.i4 + c5 * p.i5;
    let o = p.out_offset + c0 * p.o0 + c1 * p.o1 + c2 * p.o2 + c3 * p.o3 + c4 * p.o4 + c5 * p.o5;
    dst[o] = src[i];
}
