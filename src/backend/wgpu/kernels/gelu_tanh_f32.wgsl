// GELU, tanh approximation (`gelu_pytorch_tanh`):
//   y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// The tanh argument is clamped to +-15 (tanh is exactly +-1 in f32 there): some drivers
// compute tanh through exp and return NaN for large arguments.

struct Params {
    len: u32,
}

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
    let t = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
    y[i] = 0.5 * v * (1.0 + tanh(t));
}
