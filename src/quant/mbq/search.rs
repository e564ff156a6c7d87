//! MBQ's scale search: per scaled group, the alpha of `s = mean|x|^alpha` whose RTN-rounded
//! weights give the least modality-weighted output error on the recorded inputs, folded in.

use candle_core::Tensor;

use super::calibrate::Calibration;
use super::layout::{fold, DecoderLayout, Group};
use super::{get, HostWeights};
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::quant::rtn;
use crate::quant::spec::QuantSpec;

/// Alpha grid {0, 0.05, ..., 0.95}, as in AWQ and MBQ.
pub const ALPHA_GRID: usize = 20;

/// The best alpha found for one scaled group, and its loss against alpha = 0 (plain RTN).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleChoice {
    pub layer: usize,
    pub group: String,
    pub alpha: f32,
    pub loss: f32,
    pub loss_rtn: f32,
}

/// Modality-weighted mean absolute output error of `X · Ŵᵀ` against `y_ref`.
pub fn weighted_error(y: &Tensor, y_ref: &Tensor, vision: &Tensor, r: f32) -> Result<f32> {
    let per_tok = (y - y_ref)?.abs()?.mean(1)?;
    let nv = vision.sum_all()?.to_scalar::<f32>()?;
    let n = per_tok.dims1()? as f32;
    let ev = (&per_tok * vision)?.sum_all()?.to_scalar::<f32>()?;
    let et = per_tok.sum_all()?.to_scalar::<f32>()? - ev;
    let text = if n - nv > 0.0 { et / (n - nv) } else { 0.0 };
    let vis = if nv > 0.0 { ev / nv } else { 0.0 };
    Ok(text + r * vis)
}

/// Fake-quantize `w * s` (columns scaled) with RTN and divide the scale back out.
fn scaled_fake_quant(name: &str, w: &HostTensor, s: &[f32], spec: QuantSpec) -> Result<Vec<f32>> {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let scaled: Vec<f32> = w
        .data
        .iter()
        .enumerate()
        .map(|(i, v)| v * s[i % cols])
        .collect();
    let q = rtn::quantize(name, &scaled, rows, cols, spec)?.dequantize();
    Ok(q.iter().enumerate().map(|(i, v)| v / s[i % cols]).collect())
}

/// Per-channel scales `mean|x|^alpha`, normalised so that `sqrt(max * min) = 1` (AWQ).
fn scales_for(mean_abs: &[f32], alpha: f32) -> Vec<f32> {
    let s: Vec<f32> = mean_abs
        .iter()
        .map(|m| m.max(1e-4).powf(alpha).max(1e-4))
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt().max(1e-8);
    s.iter().map(|v| v / norm).collect()
}

/// Search each group's alpha and fold the scales into `w`.
pub fn search_and_fold(
    w: &mut HostWeights,
    layout: &DecoderLayout,
    cal: &Calibration,
    spec: QuantSpec,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScaleChoice>> {
    let dev = candle_core::Device::Cpu;
    let vis: Vec<f32> = cal.vision.iter().map(|&v| v as u8 as f32).collect();
    let vision = Tensor::from_vec(vis, cal.vision.len(), &dev)?;
    let mut out = Vec::new();
    for l in 0..layout.layers {
        let ra = cal.ratio_attn.get(l).copied().unwrap_or(1.0);
        let rm = cal.ratio_mlp.get(l).copied().unwrap_or(1.0);
        for g in layout.groups(l, ra, rm) {
            out.push(search_group(w, cal, &vision, &g, l, spec)?);
        }
        progress(l + 1, layout.layers);
    }
    Ok(out)
}

/// A linear's weight as `[rows, cols]`, checked: the search indexes it by column.
fn weight_2d<'a>(w: &'a HostWeights, name: &str) -> Result<(&'a HostTensor, usize, usize)> {
    let t = get(w, name)?;
    match t.shape.as_slice() {
        [r, c] if *c > 0 => Ok((t, *r, *c)),
        found => Err(Error::TensorShape {
            name: name.into(),
            expected: vec![0, 0],
            found: found.to_vec(),
        }),
    }
}

fn search_group(
    w: &mut HostWeights,
    cal: &Calibration,
    vision: &Tensor,
    g: &Group,
    layer: usize,
    spec: QuantSpec,
) -> Result<ScaleChoice> {
    let dev = candle_core::Device::Cpu;
    let first = g.linears.first().cloned().unwrap_or_default();
    let xs = cal
        .inputs
        .get(&first)
        .ok_or_else(|| Error::Invalid(format!("no calibration inputs recorded for {first}")))?;
    let (_, _, cols) = weight_2d(w, &format!("{first}.weight"))?;
    let tokens = xs.len() / cols;
    let x = Tensor::from_slice(xs, (tokens, cols), &dev)?;
    let mean_abs: Vec<f32> = x.abs()?.mean(0)?.to_vec1()?;
    let refs: Vec<(String, Tensor)> = g
        .linears
        .iter()
        .map(|n| {
            let (wt, rows, c) = weight_2d(w, &format!("{n}.weight"))?;
            if c != cols {
                return Err(Error::TensorShape {
                    name: format!("{n}.weight"),
                    expected: vec![rows, cols],
                    found: wt.shape.clone(),
                });
            }
            let wt_t = Tensor::from_slice(&wt.data, (rows, cols), &dev)?;
            Ok((n.clone(), x.matmul(&wt_t.t()?)?))
        })
        .collect::<Result<_>>()?;
    let loss_for = |s: &[f32]| -> Result<f32> {
        let mut total = 0f32;
        for (n, y_ref) in &refs {
            let wn = format!("{n}.weight");
            let wt = get(w, &wn)?;
            let q = scaled_fake_quant(&wn, wt, s, spec)?;
            let q = Tensor::from_vec(q, (wt.shape[0], wt.shape[1]), &dev)?;
            total += weighted_error(&x.matmul(&q.t()?)?, y_ref, vision, g.ratio)?;
        }
        Ok(total)
    };
    let ones = vec![1f32; cols];
    let loss_rtn = loss_for(&ones)?;
    let (mut best_alpha, mut best_loss, mut best_s) = (0f32, loss_rtn, ones);
    for i in 1..ALPHA_GRID {
        let alpha = i as f32 / ALPHA_GRID as f32;
        let s = scales_for(&mean_abs, alpha);
        let loss = loss_for(&s)?;
        if loss < best_loss {
            (best_alpha, best_loss, best_s) = (alpha, loss, s);
        }
    }
    fold(w, g, &best_s)?;
    Ok(ScaleChoice {
        layer,
        group: g.label.to_string(),
        alpha: best_alpha,
        loss: best_loss,
        loss_rtn,
    })
}
