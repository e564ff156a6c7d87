// Rotary position embedding, Llama's "rotate half" convention, for x [rows, d] where each row
// is one (batch, head, position) and position = row % s; cos and sin are [s, d / 2]:
//   y[i]          = x[i] * cos[i] - x[i + d/2] * sin[i]
//   y[i + d/2]    = x[i + d/2] * cos[i] + x[i] * sin[i]
// One invocation per (row, i < d/2) writes both halves.

struct Params {
    rows: u32,
    s: u32,
    d: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let half = p.d / 2u;
    let idx = (wid.x + wid.y * nwg.x) * WG + lid;
    if (idx >= p.rows * half) {
        return;
    }
    let row = idx / half;
    let i = idx % half;
    let pos = row % p.s;
    let c = cos_t[pos * half + i];
    let sn = sin_t[pos * half + i];
    let x1 = x[row * p.d + i];
    let x2 = x[row * p.d + half + i];
    y[row * p.d + i] = x1 * c - x2 * sn;
    y[row * p.d + half + i] = x2 * c + x1 * sn;
}
