// Elementwise y = f(x). OP is a pipeline constant: 0 scale (y = x * factor, `factor` holding the
// f32's bits), 1 SiLU (y = x / (1 + exp(-x)), when the gate is needed alone; the Llama MLP
// uses the fused silu_mul kernel).

struct Params {
    len: u32,
    factor: u32,
}

override OP: u32;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.len) {
        return;
    }
    let v = x[i];
    if (OP == 0u) {
        y[i] = v * bitcast<f32>(p.factor);
    } else {
        y[i] = v / (1.0 + exp(-v));
    }
}
