//! The SIMD kernels against the scalar reference, as a library function: native tests call it,
//! and so does the web page (`cpuKernelSelfTest`), because the wasm simd128 path is compiled only
//! for the browser and no native test can run it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::{isa_for, matmul_packed, matmul_packed_scalar};
use crate::error::Result;
use crate::quant::rtn::quantize;
use crate::quant::spec::QuantSpec;

const BITS: [u32; 4] = [8, 4, 3, 2];
const GROUPS: [usize; 3] = [32, 64, 128];
/// 96 and 320 give an odd number of 32-value blocks per eight groups (g32) or per row.
const KS: [usize; 5] = [64, 96, 256, 320, 384];
/// GEMV, a partial tile of rows of `x`, and several tiles.
const MS: [usize; 3] = [1, 3, 17];
/// Odd, and not a multiple of the four-row GEMV tile.
const N: usize = 37;
/// Same int8 activations and exact integer block sums: only the order of the f32 additions
/// differs, relative to the largest output.
pub const TOLERANCE: f32 = 1e-5;

/// One bit width and group size, over every K and M.
#[derive(Debug, Clone, Serialize)]
pub struct KernelCheck {
    pub bits: u32,
    pub group: usize,
    pub isa: &'static str,
    /// Shapes compared (K x M).
    pub cases: usize,
    /// Largest |fast - scalar| / max(1, max |scalar|) over those shapes.
    pub rel_err: f32,
    pub ok: bool,
}

fn normal(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// Random weights quantized at every width and group size, multiplied by random activations
/// on the fastest path and on the scalar one.
pub fn simd_against_scalar(seed: u64) -> Result<Vec<KernelCheck>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for bits in BITS {
        for group in GROUPS {
            let (mut cases, mut rel_err) = (0, 0f32);
            for k in KS.into_iter().filter(|k| k % group == 0) {
                let w = quantize(
                    "w",
                    &normal(&mut rng, N * k),
                    N,
                    k,
                    QuantSpec::new(bits, group)?,
                )?;
                for m in MS {
                    let x = normal(&mut rng, m * k);
                    let (mut fast, mut slow) = (vec![0f32; m * N], vec![0f32; m * N]);
                    matmul_packed(&x, m, &w, &mut fast)?;
                    matmul_packed_scalar(&x, m, &w, &mut slow)?;
                    let scale = slow.iter().fold(1f32, |a, v| a.max(v.abs()));
                    let worst = fast
                        .iter()
                        .zip(&slow)
                        .fold(0f32, |a, (f, s)| a.max((f - s).abs()));
                    // NaN (a broken kernel) must fail, so compare the negation.
                    let rel = if worst.is_finite() {
                        worst / scale
                    } else {
                        f32::INFINITY
                    };
                    rel_err = rel_err.max(rel);
                    cases += 1;
                }
            }
            out.push(KernelCheck {
                bits,
                group,
                isa: isa_for(bits).name(),
                cases,
                rel_err,
                ok: rel_err <= TOLERANCE,
            });
        }
    }
    Ok(out)
}
