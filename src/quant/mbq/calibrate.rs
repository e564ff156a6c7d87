//! MBQ's calibration pass, written once for every architecture: the answer loss's forward and
//! backward on the recording CPU backend, each decoder linear's input kept, and the mean
//! output gradient at `o_proj` / `down_proj` split by modality into the per-layer ratios.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use super::layout::DecoderLayout;
use crate::backend::cpu::{CpuBackend, Observed};
use crate::error::{Error, Result};

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

/// One calibration step's loss and what its token rows are.
pub struct CalibStep {
    /// The answer loss, still attached to the graph so `backward` reaches the probes.
    pub loss: Tensor,
    /// Per token row the decoder linears saw, in the order they saw them (one forward's
    /// `rows × seq`, then the next forward's): whether it is a real token, not padding.
    pub valid: Vec<bool>,
    /// The same rows: whether it is an image token (padding never counts as one).
    pub vision: Vec<bool>,
}

/// What MBQ needs from an architecture: where its decoder layers are, its model on the
/// recording backend, and the answer loss of a few `train`-split samples.
pub trait CalibrationSource {
    type Model;
    fn layout(&self) -> DecoderLayout;
    /// The model on `backend`, which records the linears under `layout().layers_prefix`.
    fn load(&self, backend: CpuBackend) -> Result<Self::Model>;
    /// Samples per forward/backward pass: more amortises the pass, fewer bounds the memory
    /// the graph holds until `backward`.
    fn samples_per_step(&self) -> usize;
    /// The answer loss of `train`-split samples `indices` on `model`.
    fn step(&self, model: &Self::Model, indices: Range<u64>) -> Result<CalibStep>;
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

/// The token rows an observation of linear `name` covers, from where its previous one
/// stopped: a step may run several forwards, each recorded separately.
fn claim_rows(
    offsets: &mut HashMap<String, usize>,
    name: &str,
    rows: usize,
    total: usize,
) -> Result<Range<usize>> {
    let at = offsets.entry(name.to_string()).or_default();
    let r = *at..*at + rows;
    if r.end > total {
        return Err(Error::Invalid(format!(
            "{name} saw more token rows than the calibration step's {total}"
        )));
    }
    *at = r.end;
    Ok(r)
}

/// Record inputs and modality sensitivities on `samples` training-split samples starting at
/// `first` (calibration uses `train` only; dev/val/test stay unseen).
pub fn calibrate<S: CalibrationSource>(
    src: &S,
    first: u64,
    samples: usize,
    mut progress: impl FnMut(usize),
) -> Result<Calibration> {
    if samples == 0 {
        return Err(Error::Invalid(
            "MBQ needs at least one calibration sample".into(),
        ));
    }
    let layout = src.layout();
    let recorder = Arc::new(Mutex::new(Vec::<Observed>::new()));
    // Weights are plain tensors: only the probes on the decoder linears are variables, so
    // candle tracks the graph from the first decoder layer on and computes no weight
    // gradients.
    let backend = CpuBackend::recording_only(recorder.clone(), layout.layers_prefix);
    let model = src.load(backend)?;
    let mut cal = Calibration::default();
    // Per layer: (vision sum, vision rows, text sum, text rows) for attention and MLP.
    let mut acc = vec![[0f64; 8]; layout.layers];
    let chunk = src.samples_per_step().max(1);
    let mut done = 0usize;
    while done < samples {
        let n = chunk.min(samples - done);
        let start = first + done as u64;
        if let Ok(mut r) = recorder.lock() {
            r.clear();
        }
        let step = src.step(&model, start..start + n as u64)?;
        if step.valid.len() != step.vision.len() {
            return Err(Error::Invalid(format!(
                "calibration step has {} validity flags but {} modality flags",
                step.valid.len(),
                step.vision.len()
            )));
        }
        let grads = step.loss.backward()?;
        let observed = recorder
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .map_err(|_| Error::Invalid("calibration recorder poisoned".into()))?;
        let total = step.valid.len();
        let (vision, text): (Vec<bool>, Vec<bool>) = step
            .vision
            .iter()
            .zip(&step.valid)
            .map(|(&v, &ok)| (v && ok, !v && ok))
            .unzip();
        let (mut at_x, mut at_g) = (HashMap::new(), HashMap::new());
        for o in observed {
            let Some((layer, tail)) = layout.parse(&o.name) else {
                continue;
            };
            let d_in = o.x.dims().last().copied().unwrap_or(0);
            let x = o.x.detach().flatten_all()?.to_vec1::<f32>()?;
            let rows = claim_rows(&mut at_x, &o.name, x.len() / d_in.max(1), total)?;
            let kept = cal.inputs.entry(o.name.clone()).or_default();
            for (row, &v) in x.chunks_exact(d_in.max(1)).zip(&step.valid[rows]) {
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
            let rows = claim_rows(&mut at_g, &o.name, g.len() / d_out.max(1), total)?;
            let (vs, vn) = mean_abs_rows(&g, d_out, &vision[rows.clone()], true);
            let (ts, tn) = mean_abs_rows(&g, d_out, &text[rows], true);
            if let Some(a) = acc.get_mut(layer) {
                a[slot] += vs;
                a[slot + 1] += vn as f64;
                a[slot + 2] += ts;
                a[slot + 3] += tn as f64;
            }
        }
        if let Some((name, rows)) = at_x.iter().find(|(_, &r)| r != total) {
            return Err(Error::Invalid(format!(
                "{name} saw {rows} token rows but the calibration step describes {total}"
            )));
        }
        cal.vision.extend(
            step.vision
                .iter()
                .zip(&step.valid)
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
