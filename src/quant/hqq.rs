//! HQQ (mobiusml/hqq): data-free half-quadratic optimisation of each group's zero point.
//!
//! The scale stays at its min–max value; the zero is moved to minimise an l_p (p < 1) norm of
//! the reconstruction error, which tolerates the few outliers that min–max spends its range on.
//! Each group keeps its best iterate by mean |W - W_r|, and the min–max start is an iterate, so
//! HQQ's per-group l1 error never exceeds RTN's.

use super::packed::PackedTensor;
use super::rtn::quantize_groups;
use super::spec::{Method, QuantSpec};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HqqOptions {
    pub p: f32,
    pub beta: f32,
    pub kappa: f32,
    pub iters: usize,
}

impl Default for HqqOptions {
    fn default() -> Self {
        Self {
            p: 0.7,
            beta: 10.0,
            kappa: 1.01,
            iters: 20,
        }
    }
}

/// Generalised soft-thresholding, the proximal operator of `|x|^p / beta`.
fn shrink_lp(x: f32, beta: f32, p: f32) -> f32 {
    let a = x.abs();
    if a == 0.0 {
        return 0.0;
    }
    x.signum() * (a - a.powf(p - 1.0) / beta).max(0.0)
}

/// The optimised zero of one group for inverse scale `s_inv`, starting from `z`.
pub fn optimize_zero(w: &[f32], s_inv: f32, z: f32, max_level: u32, o: &HqqOptions) -> f32 {
    let ml = max_level as f32;
    let n = w.len().max(1) as f32;
    let l1 = |z: f32| -> f32 {
        w.iter()
            .map(|&x| {
                let q = (x * s_inv + z).round().clamp(0.0, ml);
                (x - (q - z) / s_inv).abs()
            })
            .sum::<f32>()
            / n
    };
    let (mut z, mut beta) = (z, o.beta);
    let (mut best_z, mut best_err) = (z, l1(z));
    for _ in 0..o.iters {
        let mut acc = 0.0f32;
        for &x in w {
            let q = (x * s_inv + z).round().clamp(0.0, ml);
            let r = (q - z) / s_inv;
            let e = shrink_lp(x - r, beta, o.p);
            acc += q - (x - e) * s_inv;
        }
        z = acc / n;
        beta *= o.kappa;
        let err = l1(z);
        if err < best_err {
            best_err = err;
            best_z = z;
        } else {
            break;
        }
    }
    best_z
}

/// HQQ quantization of a `[rows, cols]` weight.
pub fn quantize(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    o: &HqqOptions,
) -> Result<PackedTensor> {
    let ml = spec.max_level();
    quantize_groups(name, w, rows, cols, spec, Method::Hqq, |g, s_inv, z| {
        optimize_zero(g, s_inv, z, ml, o)
    })
}
