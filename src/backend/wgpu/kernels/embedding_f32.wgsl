// Embedding gather: out[t, :] = table[ids[t] - row_start, :] for the ids this table part holds
// (row_start <= id < row_start + rows). A table too large for one storage binding is uploaded
// in row parts and gathered part by part into the same output; ids outside the part are left
// to the part that holds them. Ids are checked against the vocabulary on the host.

struct Params {
    n: u32,
    d: u32,
    row_start: u32,
    rows: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n * p.d) {
        return;
    }
    let t = i / p.d;
    let c = i % p.d;
    let id = ids[t];
    if (id < p.row_start || id >= p.row_start + p.rows) {
        return;
    }
    out[i] = table[(id - p.row_start) * p.d + c];
}
