//! The fused dequantize-and-multiply kernels against their reference: `dequantize()` then an f32
//! matmul, for every width, group size and GEMV/GEMM shape; and the SIMD path against the scalar
//! one.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use relvqa::quant::kernels::{matmul_packed, matmul_packed_scalar};
use relvqa::quant::rtn::quantize;
use relvqa::quant::{PackedTensor, QuantSpec};
use relvqa::Error;

const BITS: [u32; 4] = [8, 4, 3, 2];
const GROUPS: [usize; 3] = [32, 64, 128];
/// 96 and 320 give an odd number of 32-value blocks per eight groups (g32) or per row.
const KS: [usize; 5] = [64, 96, 256, 320, 384];
const MS: [usize; 3] = [1, 3, 17];
/// Odd, and not a multiple of the four-row GEMV tile.
const N: usize = 37;

fn normal(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

fn packed(rng: &mut ChaCha8Rng, bits: u32, group: usize, k: usize) -> PackedTensor {
    let w = normal(rng, N * k);
    quantize("w", &w, N, k, QuantSpec::new(bits, group).unwrap()).unwrap()
}

/// `x · Wᵀ` in f64 from the dequantized weight, and per output the bound on what rounding the
/// activations to int8 per 32 values can change: `Σ_blocks max|x_b| / 254 · Σ_{k∈b} |w_k|`, plus
/// f32 summation slack.
fn reference(x: &[f32], m: usize, w: &PackedTensor) -> (Vec<f32>, Vec<f32>) {
    let (n, k) = (w.rows, w.cols);
    let wd = w.dequantize();
    let mut out = vec![0f32; m * n];
    let mut bound = vec![0f32; m * n];
    for mi in 0..m {
        let xr = &x[mi * k..(mi + 1) * k];
        for c in 0..n {
            let wr = &wd[c * k..(c + 1) * k];
            let exact: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let abs: f64 = xr.iter().zip(wr).map(|(&a, &b)| (a * b).abs() as f64).sum();
            let act: f64 = xr
                .chunks(32)
                .zip(wr.chunks(32))
                .map(|(xb, wb)| {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                    amax / 254.0 * wb.iter().map(|v| v.abs() as f64).sum::<f64>()
                })
                .sum();
            out[mi * n + c] = exact as f32;
            bound[mi * n + c] = (act * 1.001 + abs * 1e-4 + 1e-6) as f32;
        }
    }
    (out, bound)
}

#[test]
fn fused_matches_dequantize_then_matmul() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut cases = 0;
    for bits in BITS {
        for group in GROUPS {
            for k in KS.into_iter().filter(|k| k % group == 0) {
                let w = packed(&mut rng, bits, group, k);
                for m in MS {
                    let x = normal(&mut rng, m * k);
                    let (want, bound) = reference(&x, m, &w);
                    for (path, f) in [
                        (
                            "fast",
                            matmul_packed as fn(&[f32], usize, &PackedTensor, &mut [f32]) -> _,
                        ),
                        ("scalar", matmul_packed_scalar),
                    ] {
                        let mut got = vec![f32::NAN; m * N];
                        f(&x, m, &w, &mut got).unwrap();
                        let (mut err2, mut ref2) = (0f64, 0f64);
                        for i in 0..m * N {
                            let e = (got[i] - want[i]).abs();
                            assert!(
                                e <= bound[i],
                                "{path} int{bits} g{group} K={k} m={m} out {i}: \
                                 got {} want {} (|err| {e} > bound {})",
                                got[i],
                                want[i],
                                bound[i]
                            );
                            err2 += (e as f64).powi(2);
                            ref2 += (want[i] as f64).powi(2);
                        }
                        // Typically far inside the worst-case bound, since rounding errors
                        // cancel: for normal x, rms(x̂ - x) / rms(x) ≈ (2.1 / 127) / √12 ≈ 0.5%.
                        let rel = (err2 / ref2).sqrt();
                        assert!(
                            rel < 1e-2,
                            "{path} int{bits} g{group} K={k} m={m}: rel {rel}"
                        );
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 4 * (2 + 1 + 3 + 2 + 3) * 3);
}

#[test]
fn simd_path_equals_scalar_path() {
    // The same check the page runs for wasm simd128 (`cpuKernelSelfTest`).
    let checks = relvqa::quant::kernels::self_test::simd_against_scalar(11).unwrap();
    assert_eq!(checks.len(), 4 * 3);
    for c in &checks {
        eprintln!(
            "int{} g{}: {} over {} shapes, rel err {:e}",
            c.bits, c.group, c.isa, c.cases, c.rel_err
        );
        assert!(c.ok, "{c:?}");
    }
    assert_eq!(
        checks.iter().map(|c| c.cases).sum::<usize>(),
        3 * (5 + 4 + 2) * 4
    );
}

#[test]
fn many_rows_take_the_parallel_path_and_agree() {
    // 4096 rows of 512: enough work to be split across tasks.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (n, k) = (4099, 512);
    let w = quantize(
        "w",
        &normal(&mut rng, n * k),
        n,
        k,
        QuantSpec::new(4, 64).unwrap(),
    )
    .unwrap();
    for m in [1, 5] {
        let x = normal(&mut rng, m * k);
        let (mut fast, mut slow) = (vec![0f32; m * n], vec![0f32; m * n]);
        matmul_packed(&x, m, &w, &mut fast).unwrap();
        matmul_packed_scalar(&x, m, &w, &mut slow).unwrap();
        let scale = slow.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() <= 1e-5 * scale, "m={m}: {a} vs {b}");
        }
    }
}

#[test]
fn length_mismatch_is_an_error() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let w = packed(&mut rng, 4, 64, 128);
    let x = vec![0.5f32; 2 * 128];
    let mut out = vec![0f32; 2 * N];
    for f in [matmul_packed, matmul_packed_scalar] {
        assert!(matches!(
            f(&x[1..], 2, &w, &mut out),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(f(&x, 3, &w, &mut out), Err(Error::Invalid(_))));
        assert!(matches!(
            f(&x, 2, &w, &mut out[1..]),
            Err(Error::Invalid(_))
        ));
        f(&x, 2, &w, &mut out).unwrap();
        f(&[], 0, &w, &mut []).unwrap();
    }
    // A tensor whose arrays disagree with its shape is refused, not read out of bounds.
    let mut bad = w.clone();
    bad.words.pop();
    assert!(matches!(
        matmul_packed(&x, 2, &bad, &mut out),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn non_finite_activations_reach_the_output() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let w = packed(&mut rng, 4, 32, 64);
    let mut x = normal(&mut rng, 2 * 64);
    x[70] = f32::NAN;
    let mut out = vec![0f32; 2 * N];
    matmul_packed(&x, 2, &w, &mut out).unwrap();
    assert!(out[..N].iter().all(|v| v.is_finite()));
    assert!(out[N..].iter().all(|v| v.is_nan()));
}
