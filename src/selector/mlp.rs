//! The Selector network at inference time: a small MLP in plain Rust.
//!
//! Plain loops instead of a backend: the network is a few hundred thousand multiply-adds per
//! answer, far below what a GPU dispatch costs, and this way the browser and the CLI run the
//! very same arithmetic.

use serde::{Deserialize, Serialize};

use super::features::{standardise, FeatureLayout};
use super::threshold::Calibration;
use crate::error::{Error, Result};

/// One fully connected layer, row-major `weight [out, in]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

impl Dense {
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, inputs: usize) -> Result<Self> {
        let outputs = bias.len();
        if inputs == 0 || weight.len() != inputs * outputs {
            return Err(Error::Invalid(format!(
                "selector layer: {} weights for {inputs} inputs x {outputs} outputs",
                weight.len()
            )));
        }
        Ok(Self {
            weight,
            bias,
            inputs,
            outputs,
        })
    }

    fn forward(&self, x: &[f32], relu: bool) -> Vec<f32> {
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| {
                let y = row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + b;
                if relu {
                    y.max(0.0)
                } else {
                    y
                }
            })
            .collect()
    }
}

/// What a Selector file says about itself besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectorMeta {
    pub layout: FeatureLayout,
    /// Hidden layer widths (ReLU after each); the output is one logit.
    pub hidden: Vec<usize>,
    /// The model (variant) whose answers it was trained on.
    pub trained_on: String,
    pub dev_n: usize,
    pub val_n: usize,
    pub best_epoch: usize,
    pub val_auc: f64,
    /// MaxProb's AUC on the same val answers: the baseline the Selector has to beat.
    pub val_auc_maxprob: f64,
    /// Thresholds for the Selector's confidence, chosen on val.
    pub calibration: Calibration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub meta: SelectorMeta,
    /// Feature standardisation fitted on dev: `(x - mean) / std`.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub layers: Vec<Dense>,
    /// Linear path from the standardised probability features straight to the output logit.
    /// Training starts it at MaxProb's logit with the MLP's output at zero, so the network
    /// learns a correction to MaxProb rather than having to rediscover it from 400 inputs.
    pub skip: Vec<f32>,
}

impl Selector {
    pub fn new(
        meta: SelectorMeta,
        mean: Vec<f32>,
        std: Vec<f32>,
        layers: Vec<Dense>,
        skip: Vec<f32>,
    ) -> Result<Self> {
        let d = meta.layout.input_dim();
        if skip.len() != meta.layout.prob_features.len() {
            return Err(Error::Invalid(format!(
                "selector skip path has {} weights for {} probability features",
                skip.len(),
                meta.layout.prob_features.len()
            )));
        }
        if mean.len() != d || std.len() != d {
            return Err(Error::Invalid(format!(
                "selector normalisation has {} / {} entries for {d} features",
                mean.len(),
                std.len()
            )));
        }
        let mut width = d;
        for (i, l) in layers.iter().enumerate() {
            if l.inputs != width {
                return Err(Error::Invalid(format!(
                    "selector layer {i} takes {} inputs but the previous layer gives {width}",
                    l.inputs
                )));
            }
            width = l.outputs;
        }
        let widths: Vec<usize> = layers.iter().map(|l| l.outputs).collect();
        if width != 1 || widths[..widths.len().saturating_sub(1)] != meta.hidden[..] {
            return Err(Error::Invalid(format!(
                "selector layers {widths:?} do not match hidden {:?} + 1 output",
                meta.hidden
            )));
        }
        Ok(Self {
            meta,
            mean,
            std,
            layers,
            skip,
        })
    }

    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }

    /// Whether this Selector reads the features of a model with this text hidden size.
    pub fn check_model(&self, hidden_size: usize) -> Result<()> {
        if self.meta.layout.hidden_size != hidden_size {
            return Err(Error::Invalid(format!(
                "the Selector was trained on a model with hidden size {} ({} features) but this \
                 model's hidden size is {hidden_size}; train one for it with \
                 `relvqa selector train --model ...`",
                self.meta.layout.hidden_size,
                self.input_dim()
            )));
        }
        Ok(())
    }

    /// Confidence in [0, 1] that the answer is right.
    pub fn confidence(&self, features: &[f32]) -> Result<f32> {
        if features.len() != self.input_dim() {
            return Err(Error::Invalid(format!(
                "the Selector takes {} features but got {}; it was trained for another model",
                self.input_dim(),
                features.len()
            )));
        }
        let mut x = standardise(features, &self.mean, &self.std, self.skip.len());
        let probs = x.len() - self.skip.len();
        let skip: f32 = self
            .skip
            .iter()
            .zip(x.get(probs..).unwrap_or_default())
            .map(|(w, v)| w * v)
            .sum();
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x, i < last);
        }
        let logit = x.first().copied().unwrap_or(0.0) + skip;
        Ok(1.0 / (1.0 + (-logit).exp()))
    }
}
