// GELU with the exact erf (`nn.GELU()`, Qwen2-VL's patch merger):
//   y = 0.5 x (1 + erf(x / sqrt(2)))
// WGSL has no erf. Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7 over the whole line):
//   erf(z) = sign(z) (1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-z^2)),
//   t = 1 / (1 + p |z|)
// The exp argument is clamped at -80 (exp is 0 in f32 well before), so no driver sees a
// denormal-producing or infinite argument.

struct Params {
    len: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn erf_as(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(max(-a * a, -80.0));
    return select(r, -r, z < 0.0);
}

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
    y[i] = 0.5 * v * (1.0 + erf_as(v * 0.7071067811865476));
}
