//! MBQ (thu-nics/MBQ, CVPR 2025): modality-balanced, activation-aware scale search.
//!
//! AWQ's observation is that a few input channels carry large activations, and scaling those
//! columns up before rounding (and the previous op down, so the network is unchanged) protects
//! them. MBQ adds that the loss is far less sensitive to errors on vision tokens than on text
//! tokens, so the search weighs the vision-token output error by the measured gradient ratio `r`
//! instead of treating every token alike. Steps:
//! 1. [`calibrate`]: one forward/backward pass of the answer loss on `train`-split samples,
//!    recording each text linear's input and the gradient at `o_proj` / `down_proj` outputs.
//! 2. [`search_and_fold`]: per layer and per scaled group, grid-search `alpha`, then fold the
//!    winning scales into the weights (the caller then rounds them with RTN).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use super::rtn;
use super::spec::QuantSpec;
use crate::backend::cpu::{CpuBackend, Observed};
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::eval::shapes::{Draw, Split};
use crate::model::generate::Vqa;
use crate::model::idefics3::{Idefics3, Idefics3Config};
use crate::model::params::SafetensorsParams;
use crate::model::tokenizer::VqaTokenizer;
use crate::train::{batch, batch_loss};

/// Host weights by Hugging Face name; scales are folded into them in place.
pub type HostWeights = BTreeMap<String, HostTensor>;

/// Alpha grid {0, 0.05, ..., 0.95}, as in AWQ and MBQ.
pub const ALPHA_GRID: usize = 20;

/// What one calibration pass measured.
#[derive(Debug, Default)]
pub struct Calibration {
    /// Per text linear: its input rows `[tokens, in]`, flattened, padding removed.
    pub inputs: HashMap<String, Vec<f32>>,
    /// Per token row of `inputs`: whether it is an image token.
    pub vision: Vec<bool>,
    /// Per layer: vision/text gradient ratio at `o_proj` (attention) and `down_proj` (MLP),
    /// already floored at their medians across layers.
    pub ratio_attn: Vec<f32>,
    pub ratio_mlp: Vec<f32>,
    /// The same ratios before flooring, for the report.
    pub raw_attn: Vec<f32>,
    pub raw_mlp: Vec<f32>,
}

fn text_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.text_model.layers.")?;
    let (i, tail) = rest.split_once('.')?;
    Some((i.parse().ok()?, tail))
}

/// Mean |g| over the rows selected by `mask`, where `g` is `[rows, d]` flattened.
fn mean_abs_rows(g: &[f32], d: usize, mask: &[bool], want: bool) -> (f64, usize) {
    let mut sum = 0f64;
    let mut n = 0usize;
    for (row, &m) in g.chunks_exact(d.max(1)).zip(mask) {
        if m == want {
            sum += row.iter().map(|v| v.abs() as f64).sum::<f64>() / d.max(1) as f64;
            n += 1;
        }
    }
    (sum, n)
}

fn floor_at_median(r: &[f32]) -> Vec<f32> {
    let mut s = r.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let med = s.get(s.len() / 2).copied().unwrap_or(1.0);
    r.iter().map(|&v| v.max(med)).collect()
}

/// Record inputs and modality sensitivities on `samples` training-split samples starting at
/// `first` (calibration uses `train` only; dev/val/test stay unseen).
pub fn calibrate(
    cfg: &Idefics3Config,
    tok: &VqaTokenizer,
    weights: &[u8],
    first: u64,
    samples: usize,
    mut progress: impl FnMut(usize),
) -> Result<Calibration> {
    if samples == 0 {
        return Err(Error::Invalid(
            "MBQ needs at least one calibration sample".into(),
        ));
    }
    let recorder = Arc::new(Mutex::new(Vec::<Observed>::new()));
    // Weights are plain tensors: only the probes on the text linears are variables, so candle
    // tracks the graph from the first text layer on and computes no weight gradients.
    let backend = CpuBackend::recording_only(recorder.clone(), "model.text_model.");
    let mut p = SafetensorsParams::new(backend.clone(), "model.safetensors", weights)?;
    let model = Idefics3::load(&mut p, cfg)?;
    let vqa = Vqa::new(backend, model, tok.clone());
    let layers = cfg.text_config.num_hidden_layers;
    let mut cal = Calibration::default();
    // Per layer: (vision sum, vision rows, text sum, text rows) for attention and MLP.
    let mut acc = vec![[0f64; 8]; layers];
    let chunk = 8usize;
    let mut done = 0usize;
    while done < samples {
        let n = chunk.min(samples - done);
        let start = first + done as u64;
        let b = batch::make_batch(&vqa, Split::Train, start..start + n as u64, 1, Draw::EVAL)?;
        if let Ok(mut r) = recorder.lock() {
            r.clear();
        }
        let loss = batch_loss(&vqa, &b)?;
        let grads = loss.backward()?;
        let valid: Vec<bool> = b.ids.iter().map(|&i| i != tok.special.pad).collect();
        let vision_all: Vec<bool> = b.ids.iter().map(|&i| i == cfg.image_token_id).collect();
        let observed = recorder
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .map_err(|_| Error::Invalid("calibration recorder poisoned".into()))?;
        for o in observed {
            let Some((layer, tail)) = text_layer(&o.name) else {
                continue;
            };
            let d_in = o.x.dims().last().copied().unwrap_or(0);
            let x = o.x.detach().flatten_all()?.to_vec1::<f32>()?;
            let kept = cal.inputs.entry(o.name.clone()).or_default();
            for (row, &v) in x.chunks_exact(d_in.max(1)).zip(&valid) {
                if v {
                    kept.extend_from_slice(row);
                }
            }
            let slot = match tail {
                "self_attn.o_proj" => 0,
                "mlp.down_proj" => 4,
                _ => continue,
            };
            let Some(g) = grads.get(o.grad_probe.as_tensor()) else {
                return Err(Error::Invalid(format!(
                    "no gradient reached {}; cannot measure modality sensitivity",
                    o.name
                )));
            };
            let d_out = g.dims().last().copied().unwrap_or(0);
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let txt: Vec<bool> = vision_all
                .iter()
                .zip(&valid)
                .map(|(&v, &ok)| !v && ok)
                .collect();
            let (vs, vn) = mean_abs_rows(&g, d_out, &vision_all, true);
            let (ts, tn) = mean_abs_rows(&g, d_out, &txt, true);
            if let Some(a) = acc.get_mut(layer) {
                a[slot] += vs;
                a[slot + 1] += vn as f64;
                a[slot + 2] += ts;
                a[slot + 3] += tn as f64;
            }
        }
        cal.vision.extend(
            vision_all
                .iter()
                .zip(&valid)
                .filter(|(_, &ok)| ok)
                .map(|(&v, _)| v),
        );
        done += n;
        progress(done);
    }
    let ratio = |a: &[f64; 8], s: usize| -> f32 {
        let vis = a[s] / a[s + 1].max(1.0);
        let txt = a[s + 2] / a[s + 3].max(1.0);
        if txt > 0.0 {
            (vis / txt) as f32
        } else {
            1.0
        }
    };
    cal.raw_attn = acc.iter().map(|a| ratio(a, 0)).collect();
    cal.raw_mlp = acc.iter().map(|a| ratio(a, 4)).collect();
    cal.ratio_attn = floor_at_median(&cal.raw_attn);
    cal.ratio_mlp = floor_at_median(&cal.raw_mlp);
    Ok(cal)
}

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

pub fn get<'a>(w: &'a HostWeights, name: &str) -> Result<&'a HostTensor> {
    w.get(name)
        .ok_or_else(|| Error::MissingTensor { name: name.into() })
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

/// One scaled group: the op whose output feeds the linears, and the linears.
struct Group {
    label: &'static str,
    prev: String,
    /// Whether `prev` is a norm (scale its weight vector) or a linear (scale its rows).
    prev_is_norm: bool,
    linears: Vec<String>,
    ratio: f32,
}

/// Search each group's alpha and fold the scales into `w`.
pub fn search_and_fold(
    w: &mut HostWeights,
    cfg: &Idefics3Config,
    cal: &Calibration,
    spec: QuantSpec,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScaleChoice>> {
    let t = &cfg.text_config;
    let dev = candle_core::Device::Cpu;
    let vis: Vec<f32> = cal.vision.iter().map(|&v| v as u8 as f32).collect();
    let vision = Tensor::from_vec(vis, cal.vision.len(), &dev)?;
    let same_vo = t.kv_heads() == t.num_attention_heads;
    let mut out = Vec::new();
    for l in 0..t.num_hidden_layers {
        let p = format!("model.text_model.layers.{l}");
        let ra = cal.ratio_attn.get(l).copied().unwrap_or(1.0);
        let rm = cal.ratio_mlp.get(l).copied().unwrap_or(1.0);
        let mut groups = vec![Group {
            label: "input_layernorm->q,k,v",
            prev: format!("{p}.input_layernorm.weight"),
            prev_is_norm: true,
            linears: ["q", "k", "v"]
                .iter()
                .map(|n| format!("{p}.self_attn.{n}_proj"))
                .collect(),
            ratio: ra,
        }];
        // v -> o only when v's output channels are o's input channels (no GQA), as in AWQ.
        if same_vo {
            groups.push(Group {
                label: "v_proj->o_proj",
                prev: format!("{p}.self_attn.v_proj.weight"),
                prev_is_norm: false,
                linears: vec![format!("{p}.self_attn.o_proj")],
                ratio: ra,
            });
        }
        groups.push(Group {
            label: "post_attention_layernorm->gate,up",
            prev: format!("{p}.post_attention_layernorm.weight"),
            prev_is_norm: true,
            linears: vec![format!("{p}.mlp.gate_proj"), format!("{p}.mlp.up_proj")],
            ratio: rm,
        });
        groups.push(Group {
            label: "up_proj->down_proj",
            prev: format!("{p}.mlp.up_proj.weight"),
            prev_is_norm: false,
            linears: vec![format!("{p}.mlp.down_proj")],
            ratio: rm,
        });
        for g in groups {
            out.push(search_group(w, cal, &vision, &g, l, spec)?);
        }
        progress(l + 1, t.num_hidden_layers);
    }
    Ok(out)
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
    let cols = get(w, &format!("{first}.weight"))?.shape[1];
    let tokens = xs.len() / cols.max(1);
    let x = Tensor::from_slice(xs, (tokens, cols), &dev)?;
    let mean_abs: Vec<f32> = x.abs()?.mean(0)?.to_vec1()?;
    let refs: Vec<(String, Tensor)> = g
        .linears
        .iter()
        .map(|n| {
            let wt = get(w, &format!("{n}.weight"))?;
            let wt_t = Tensor::from_slice(&wt.data, (wt.shape[0], wt.shape[1]), &dev)?;
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

/// Multiply the linears' columns by `s` and divide the previous op's output channels by it;
/// the network's function is unchanged (up to float rounding).
fn fold(w: &mut HostWeights, g: &Group, s: &[f32]) -> Result<()> {
    for n in &g.linears {
        let wn = format!("{n}.weight");
        let wt = w
            .get_mut(&wn)
            .ok_or_else(|| Error::MissingTensor { name: wn.clone() })?;
        let cols = wt.shape[1];
        for (i, v) in wt.data.iter_mut().enumerate() {
            *v *= s[i % cols];
        }
    }
    let prev = w.get_mut(&g.prev).ok_or_else(|| Error::MissingTensor {
        name: g.prev.clone(),
    })?;
    if g.prev_is_norm {
        for (v, si) in prev.data.iter_mut().zip(s) {
            *v /= si;
        }
    } else {
        // A linear `[out, in]`: its output channel `r` is row `r`.
        let cols = prev.shape[1];
        for (i, v) in prev.data.iter_mut().enumerate() {
            *v /= s[i / cols];
        }
    }
    Ok(())
}
