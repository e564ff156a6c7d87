//! Training the Selector: BCE against each answer's VQA accuracy on `dev`, early-stopped on val
//! AUC (the metric it exists to improve), as in Whitehead et al. 2022.
//!
//! Weights, dropout masks and batch order all come from one seeded ChaCha stream instead of
//! candle's unseedable CPU RNG, so the same answers always give the same Selector.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::features::{standardise, FeatureLayout, MAXPROB_LOGIT};
use super::mlp::{Dense, Selector, SelectorMeta};
use super::threshold::Calibration;
use crate::error::{Error, Result};
use crate::metrics::risk_coverage_auc as auc;

/// One answered question as the Selector sees it.
#[derive(Debug, Clone)]
pub struct Example {
    pub features: Vec<f32>,
    /// VQA accuracy of the answer in [0, 1]: the BCE target.
    pub acc: f32,
    pub maxprob: f32,
}

#[derive(Debug, Clone)]
pub struct SelectorTrainOptions {
    pub hidden: Vec<usize>,
    pub dropout: f32,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch: usize,
    pub max_epochs: usize,
    /// Stop after this many epochs without a better val AUC.
    pub patience: usize,
    /// A trained epoch replaces the untrained network (which is MaxProb) only if it lowers val
    /// AUC by at least this fraction. Early stopping picks the best of many epochs on val, so
    /// a tiny val gain is mostly selection noise: on the shipped model, gains of 0.1-1% on val
    /// turned into losses of 1-3% on test for every variant.
    pub min_relative_gain: f64,
    pub seed: u64,
}

impl Default for SelectorTrainOptions {
    fn default() -> Self {
        // A few thousand dev answers against ~400 features: a narrow net, strong dropout and
        // weight decay, and early stopping keep it from memorising dev.
        Self {
            hidden: vec![128, 64],
            dropout: 0.3,
            lr: 1e-3,
            weight_decay: 0.05,
            batch: 128,
            max_epochs: 150,
            patience: 20,
            min_relative_gain: 0.02,
            seed: 0,
        }
    }
}

/// Val AUC after each epoch, for the training log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub val_auc: f64,
}

struct Net {
    layers: Vec<(Var, Var)>,
    /// Weights of the probability features' direct path to the logit (see [`Selector::skip`]).
    skip: Var,
    probs: usize,
}

fn check_examples(what: &str, ex: &[Example], d: usize) -> Result<()> {
    if ex.is_empty() {
        return Err(Error::Train(format!(
            "selector: the {what} split has no answers to learn from"
        )));
    }
    for (i, e) in ex.iter().enumerate() {
        if e.features.len() != d {
            return Err(Error::Train(format!(
                "selector: {what} answer {i} has {} features, the layout needs {d}",
                e.features.len()
            )));
        }
        if !(0.0..=1.0).contains(&e.acc) || e.features.iter().any(|x| !x.is_finite()) {
            return Err(Error::Train(format!(
                "selector: {what} answer {i} has a non-finite feature or an accuracy outside [0, 1]"
            )));
        }
    }
    Ok(())
}

/// Per-feature mean and standard deviation on dev; constant features get std 1 so they
/// standardise to zero instead of dividing by zero.
fn standardisation(ex: &[Example], d: usize) -> (Vec<f32>, Vec<f32>) {
    let n = ex.len() as f64;
    let mut mean = vec![0f64; d];
    for e in ex {
        for (m, x) in mean.iter_mut().zip(&e.features) {
            *m += *x as f64 / n;
        }
    }
    let mut var = vec![0f64; d];
    for e in ex {
        for ((v, x), m) in var.iter_mut().zip(&e.features).zip(&mean) {
            *v += (*x as f64 - m).powi(2) / n;
        }
    }
    let std = var
        .iter()
        .map(|v| {
            if v.sqrt() > 1e-6 {
                v.sqrt() as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean.iter().map(|m| *m as f32).collect(), std)
}

fn matrix(ex: &[&Example], mean: &[f32], std: &[f32], probs: usize) -> Result<Tensor> {
    let d = mean.len();
    let mut data = Vec::with_capacity(ex.len() * d);
    for e in ex {
        data.extend(standardise(&e.features, mean, std, probs));
    }
    Ok(Tensor::from_vec(data, (ex.len(), d), &Device::Cpu)?)
}

impl Net {
    /// Kaiming-uniform hidden layers, but a zero output layer and a skip path that reproduces
    /// MaxProb's logit: the untrained Selector *is* MaxProb, and each epoch must earn its
    /// departure from it on val AUC.
    fn new(
        layout: &FeatureLayout,
        hidden: &[usize],
        mean: &[f32],
        std: &[f32],
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let d = layout.input_dim();
        let probs = layout.prob_features.len();
        let mut layers = Vec::new();
        let mut width = d;
        for (i, out) in hidden.iter().copied().chain([1]).enumerate() {
            let w: Vec<f32> = if i == hidden.len() {
                vec![0.0; out * width]
            } else {
                let bound = (6.0 / width as f32).sqrt();
                (0..out * width)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect()
            };
            let w = Var::from_tensor(&Tensor::from_vec(w, (out, width), &Device::Cpu)?)?;
            let b = Var::from_tensor(&Tensor::zeros(out, DType::F32, &Device::Cpu)?)?;
            layers.push((w, b));
            width = out;
        }
        let at = d - probs + MAXPROB_LOGIT;
        let mut skip = vec![0f32; probs];
        if let (Some(s), Some(sd), Some(m)) =
            (skip.get_mut(MAXPROB_LOGIT), std.get(at), mean.get(at))
        {
            // w * (x - m) / sd + m == x: the raw MaxProb logit.
            *s = *sd;
            if let Some((_, b)) = layers.last() {
                b.set(&Tensor::from_vec(vec![*m], 1, &Device::Cpu)?)?;
            }
        }
        let skip = Var::from_tensor(&Tensor::from_vec(skip, probs, &Device::Cpu)?)?;
        Ok(Self {
            layers,
            skip,
            probs,
        })
    }

    fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .chain([self.skip.clone()])
            .collect()
    }

    /// Logits `[n]`; with `dropout`, a fresh mask per hidden layer from `rng`.
    fn forward(&self, x: &Tensor, dropout: Option<(f32, &mut ChaCha8Rng)>) -> Result<Tensor> {
        let (_, d) = x.dims2()?;
        let skip = x
            .narrow(1, d - self.probs, self.probs)?
            .matmul(&self.skip.as_tensor().unsqueeze(1)?)?;
        let mut h = x.clone();
        let last = self.layers.len().saturating_sub(1);
        let mut dropout = dropout;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i < last {
                h = h.relu()?;
                if let Some((p, rng)) = dropout.as_mut() {
                    let keep = 1.0 - *p;
                    let (rows, cols) = h.dims2()?;
                    let mask: Vec<f32> = (0..rows * cols)
                        .map(|_| {
                            if rng.random::<f32>() < keep {
                                1.0 / keep
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    h = (h * Tensor::from_vec(mask, (rows, cols), &Device::Cpu)?)?;
                }
            }
        }
        Ok((h + skip)?.squeeze(1)?)
    }

    fn skip_vec(&self) -> Result<Vec<f32>> {
        Ok(self.skip.as_tensor().to_vec1::<f32>()?)
    }

    fn to_layers(&self) -> Result<Vec<Dense>> {
        self.layers
            .iter()
            .map(|(w, b)| {
                let (_, inputs) = w.as_tensor().dims2()?;
                Dense::new(
                    w.as_tensor().flatten_all()?.to_vec1::<f32>()?,
                    b.as_tensor().to_vec1::<f32>()?,
                    inputs,
                )
            })
            .collect()
    }
}

/// Mean binary cross-entropy with logits against soft targets, in the stable form
/// `max(z, 0) - z*y + ln(1 + e^-|z|)`.
fn bce_with_logits(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    let soft = (z.relu()? - (z * y)?)?;
    let log_term = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((soft + log_term)?.mean_all()?)
}

fn sigmoid_vec(z: &Tensor) -> Result<Vec<f64>> {
    Ok(z.to_vec1::<f32>()?
        .iter()
        .map(|z| 1.0 / (1.0 + (-(*z as f64)).exp()))
        .collect())
}

/// Train a Selector on `dev`, keep the epoch with the best val AUC, and calibrate its
/// thresholds on val. `trained_on` names the model variant the answers came from.
pub fn train_selector(
    layout: FeatureLayout,
    dev: &[Example],
    val: &[Example],
    trained_on: &str,
    o: &SelectorTrainOptions,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<(Selector, Vec<EpochLog>)> {
    let d = layout.input_dim();
    check_examples("dev", dev, d)?;
    check_examples("val", val, d)?;
    if o.batch == 0 || o.max_epochs == 0 || !(0.0..1.0).contains(&o.dropout) {
        return Err(Error::Invalid(
            "selector training needs batch > 0, epochs > 0 and dropout in [0, 1)".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let (mean, std) = standardisation(dev, d);
    let net = Net::new(&layout, &o.hidden, &mean, &std, &mut rng)?;
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: o.lr,
            weight_decay: o.weight_decay,
            ..Default::default()
        },
    )?;
    let val_refs: Vec<&Example> = val.iter().collect();
    let probs = layout.prob_features.len();
    let val_x = matrix(&val_refs, &mean, &std, probs)?;
    let val_acc: Vec<f64> = val.iter().map(|e| e.acc as f64).collect();
    let val_maxprob: Vec<f64> = val.iter().map(|e| e.maxprob as f64).collect();

    let mut order: Vec<usize> = (0..dev.len()).collect();
    let mut log = Vec::new();
    let start = sigmoid_vec(&net.forward(&val_x, None)?)?;
    let untrained = (auc(&start, &val_acc)?, 0, net.to_layers()?, net.skip_vec()?);
    let mut best: Option<(f64, usize, Vec<Dense>, Vec<f32>)> = Some(untrained.clone());
    for epoch in 1..=o.max_epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        for chunk in order.chunks(o.batch) {
            let ex: Vec<&Example> = chunk.iter().filter_map(|&i| dev.get(i)).collect();
            let x = matrix(&ex, &mean, &std, probs)?;
            let y = Tensor::from_vec(
                ex.iter().map(|e| e.acc).collect::<Vec<f32>>(),
                ex.len(),
                &Device::Cpu,
            )?;
            let z = net.forward(&x, Some((o.dropout, &mut rng)))?;
            let loss = bce_with_logits(&z, &y)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let val_conf = sigmoid_vec(&net.forward(&val_x, None)?)?;
        let val_auc = auc(&val_conf, &val_acc)?;
        let entry = EpochLog {
            epoch,
            loss: loss_sum / batches.max(1) as f64,
            val_auc,
        };
        if !entry.loss.is_finite() {
            return Err(Error::Train(format!(
                "selector loss became {} at epoch {epoch}; lower the learning rate",
                entry.loss
            )));
        }
        on_epoch(&entry);
        log.push(entry);
        // Lower AUC is better; ties keep the earlier (less fitted) epoch.
        if best.as_ref().is_none_or(|(b, ..)| val_auc < *b) {
            best = Some((val_auc, epoch, net.to_layers()?, net.skip_vec()?));
        } else if best
            .as_ref()
            .is_some_and(|(_, e, ..)| epoch >= e + o.patience)
        {
            break;
        }
    }
    let mut best = best.ok_or_else(|| Error::Train("selector: no epoch ran".into()))?;
    if best.0 > untrained.0 * (1.0 - o.min_relative_gain) {
        best = untrained;
    }
    let (val_auc, best_epoch, layers, skip) = best;
    let meta = SelectorMeta {
        layout,
        hidden: o.hidden.clone(),
        trained_on: trained_on.into(),
        dev_n: dev.len(),
        val_n: val.len(),
        best_epoch,
        val_auc,
        val_auc_maxprob: auc(&val_maxprob, &val_acc)?,
        // Filled in below, once the chosen weights can score val.
        calibration: Calibration::default(),
    };
    let mut selector = Selector::new(meta, mean, std, layers, skip)?;
    let conf: Vec<f64> = val
        .iter()
        .map(|e| selector.confidence(&e.features).map(f64::from))
        .collect::<Result<_>>()?;
    selector.meta.calibration = Calibration::fit("selector", "val", &conf, &val_acc)?;
    Ok((selector, log))
}
