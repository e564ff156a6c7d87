//! Round-to-nearest with per-group min–max scale and zero: the baseline every other method is
//! compared with, and HQQ's starting point.

use half::f16;

use super::packed::PackedTensor;
use super::spec::{Method, QuantSpec};
use crate::error::{Error, Result};

/// Min–max inverse scale and zero of one group, in HQQ's parametrisation:
/// `q = round(w * s_inv + z)`, `w ≈ (q - z) / s_inv`.
pub fn minmax_params(group: &[f32], max_level: u32) -> (f32, f32) {
    let (lo, hi) = group
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &w| {
            (lo.min(w), hi.max(w))
        });
    // A constant group has no range; any scale reproduces it exactly through the zero.
    let range = (hi - lo).max(1e-8);
    // Cap as HQQ does so an almost-constant group keeps a scale f16 can hold.
    let s_inv = (max_level as f32 / range).min(2e4);
    (s_inv, -lo * s_inv)
}

/// Levels of one group for an f16-representable scale and zero.
pub fn levels_for(group: &[f32], scale: f32, zero: f32, max_level: u32, out: &mut [u8]) {
    let inv = 1.0 / scale;
    for (q, &w) in out.iter_mut().zip(group) {
        *q = (w * inv + zero).round().clamp(0.0, max_level as f32) as u8;
    }
}

/// Check a float weight before quantizing it: shape, finiteness and group divisibility.
pub fn check_weight(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: QuantSpec,
) -> Result<()> {
    spec.validate()?;
    spec.check_k(name, cols)?;
    if w.len() != rows * cols {
        return Err(Error::Invalid(format!(
            "{name}: {} values for a [{rows}, {cols}] weight",
            w.len()
        )));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "{name}: value {} at index {i} is not finite; cannot quantize",
            w[i]
        )));
    }
    Ok(())
}

/// Quantize with `zero_for(group, s_inv, z_init) -> z`, shared by RTN and HQQ so both store
/// exactly the same way (f16 scale `1/s_inv`, f16 zero, levels recomputed for the rounded pair).
pub fn quantize_groups(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    method: Method,
    mut zero_for: impl FnMut(&[f32], f32, f32) -> f32,
) -> Result<PackedTensor> {
    check_weight(name, w, rows, cols, spec)?;
    let g = spec.group;
    let ml = spec.max_level();
    let n_groups = rows * cols / g;
    let mut levels = vec![0u8; rows * cols];
    let mut scales = Vec::with_capacity(n_groups);
    let mut zeros = Vec::with_capacity(n_groups);
    for (grp, out) in w.chunks_exact(g).zip(levels.chunks_exact_mut(g)) {
        let (s_inv, z0) = minmax_params(grp, ml);
        let z = zero_for(grp, s_inv, z0);
        let scale = f16::from_f32(1.0 / s_inv);
        let zero = f16::from_f32(z);
        levels_for(grp, scale.to_f32(), zero.to_f32(), ml, out);
        scales.push(scale);
        zeros.push(zero);
    }
    PackedTensor::from_levels(spec, method, rows, cols, &levels, scales, zeros)
}

/// Round-to-nearest min–max quantization of a `[rows, cols]` weight.
pub fn quantize(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: QuantSpec,
) -> Result<PackedTensor> {
    quantize_groups(name, w, rows, cols, spec, Method::Rtn, |_, _, z| z)
}
