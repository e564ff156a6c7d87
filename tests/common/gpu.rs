//! Shared GPU-test fixtures: the context (failing loudly without an adapter), seeded random
//! data and the error measure every GPU test uses.

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relvqa::backend::wgpu::{GpuContext, GpuOptions, WgpuBackend};
use relvqa::quant::spec::{Method, QuantSpec};
use relvqa::quant::PackedTensor;
use relvqa::{Error, GpuErrorKind};

/// Without an adapter the GPU tests FAIL (never skip), so that a CI machine that lost its
/// driver cannot pass silently.
fn opened<T>(r: relvqa::Result<T>) -> T {
    match r {
        Ok(x) => x,
        Err(
            e @ Error::Gpu {
                kind: GpuErrorKind::NoAdapter,
                ..
            },
        ) => panic!(
            "no GPU adapter, so the WGSL kernels cannot be tested: {e}\n\
             Install lavapipe with `apt-get install mesa-vulkan-drivers` and rerun."
        ),
        Err(e) => panic!("GPU context failed: {e}"),
    }
}

pub fn gpu() -> GpuContext {
    opened(pollster::block_on(GpuContext::new()))
}

pub fn gpu_backend() -> WgpuBackend {
    opened(pollster::block_on(WgpuBackend::new()))
}

pub fn gpu_backend_with(opts: &GpuOptions) -> WgpuBackend {
    opened(pollster::block_on(WgpuBackend::with_options(opts)))
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn rand_vec(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Max |got - want| over max(1, max |want|): relative to the output's scale, so values near
/// zero in a sum of thousands of terms do not dominate.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max)
        / scale
}

pub fn check_tol(name: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = rel_err(got, want);
    println!("{name}: max relative error {e:.2e}");
    assert!(e <= tol, "{name}: relative error {e:.3e} > {tol:.0e}");
}

pub fn random_packed(
    rng: &mut ChaCha8Rng,
    bits: u32,
    group: usize,
    n: usize,
    k: usize,
) -> PackedTensor {
    let spec = QuantSpec::new(bits, group).expect("spec");
    let max = spec.max_level() as u8;
    let levels: Vec<u8> = (0..n * k).map(|_| rng.random_range(0..=max)).collect();
    let groups = n * k / group;
    let scales = (0..groups)
        .map(|_| f16::from_f32(rng.random_range(0.001..0.05)))
        .collect();
    // Real-valued zeros, as HQQ leaves them.
    let zeros = (0..groups)
        .map(|_| f16::from_f32(rng.random_range(0.0..max as f32)))
        .collect();
    PackedTensor::from_levels(spec, Method::Hqq, n, k, &levels, scales, zeros).expect("pack")
}
