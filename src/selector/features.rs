//! The Selector's input: detached features of the model that produced the answer.
//!
//! Whitehead et al. feed the Selector the model's own representations because a model's
//! failures show in its states (an image it cannot parse, a question it has not seen) before
//! they show in its answer probability. The layout is fixed and recorded in the Selector file,
//! so a Selector trained on one model refuses a model of another width instead of misreading it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::generate::Generation;

/// Names of the answer-probability features, in input order after the three hidden states.
pub const PROB_FEATURES: [&str; 8] = [
    "maxprob",
    "maxprob_logit",
    "min_token_prob",
    "mean_token_prob",
    "end_prob",
    "mean_entropy",
    "max_entropy",
    "answer_tokens",
];

/// How a feature vector is laid out; stored with the Selector and checked on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureLayout {
    /// Width of each of the three hidden-state blocks (the text model's hidden size).
    pub hidden_size: usize,
    pub blocks: Vec<String>,
    pub prob_features: Vec<String>,
}

impl FeatureLayout {
    pub fn new(hidden_size: usize) -> Self {
        Self {
            hidden_size,
            blocks: ["image_pooled", "question_pooled", "answer_last"]
                .map(String::from)
                .to_vec(),
            prob_features: PROB_FEATURES.map(String::from).to_vec(),
        }
    }

    pub fn input_dim(&self) -> usize {
        self.blocks.len() * self.hidden_size + self.prob_features.len()
    }
}

/// Index of `maxprob_logit` among the probability features: the Selector's skip path starts
/// from it, so an untrained Selector ranks answers exactly as MaxProb does.
pub const MAXPROB_LOGIT: usize = 1;

/// Standardised features are clipped to this many standard deviations. A feature that barely
/// varies on dev (the answer length is almost always one token) standardises an OOD value to
/// hundreds of sigmas, and the network then extrapolates to 0 or 1 at random (measured: one
/// int3 Selector gave every garbled easy-VQA answer confidence 1.0, the f16 one 0.0).
pub const FEATURE_CLIP: f32 = 5.0;

/// Standardise one feature vector as the Selector sees it: `(x - mean) / std`, clipped to
/// [`FEATURE_CLIP`], except MaxProb's logit, which is bounded by construction and must stay
/// unclipped so the skip path keeps MaxProb's full ranking.
pub fn standardise(features: &[f32], mean: &[f32], std: &[f32], skip_len: usize) -> Vec<f32> {
    let keep = features.len().saturating_sub(skip_len) + MAXPROB_LOGIT;
    features
        .iter()
        .zip(mean.iter().zip(std))
        .enumerate()
        .map(|(i, (x, (m, s)))| {
            let z = (x - m) / s;
            if i == keep {
                z
            } else {
                z.clamp(-FEATURE_CLIP, FEATURE_CLIP)
            }
        })
        .collect()
}

/// `ln(p / (1 - p))`, clamped so a probability of exactly 0 or 1 stays finite.
pub fn maxprob_logit(p: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// The feature vector of one answer. Probability features are what MaxProb sees, made
/// explicit so the Selector can at least match it; the hidden states add what it cannot see.
pub fn features(g: &Generation) -> Result<Vec<f32>> {
    let f = &g.features;
    let d = f.image_pooled.len();
    if f.question_pooled.len() != d || f.answer_last.len() != d || d == 0 {
        return Err(Error::Invalid(format!(
            "selector features: hidden blocks of widths {}, {}, {} must be equal and non-zero",
            d,
            f.question_pooled.len(),
            f.answer_last.len()
        )));
    }
    let probs = &g.token_probs;
    let ents = &g.token_entropies;
    let end = g.end_prob.unwrap_or(0.0);
    // An empty answer has no token probabilities; the terminator's is the only evidence.
    let (min_p, mean_p) = if probs.is_empty() {
        (end, end)
    } else {
        (
            probs.iter().copied().fold(f32::INFINITY, f32::min),
            probs.iter().sum::<f32>() / probs.len() as f32,
        )
    };
    let (mean_e, max_e) = if ents.is_empty() {
        (0.0, 0.0)
    } else {
        (
            ents.iter().sum::<f32>() / ents.len() as f32,
            ents.iter().copied().fold(0.0, f32::max),
        )
    };
    let mut v = Vec::with_capacity(3 * d + PROB_FEATURES.len());
    v.extend_from_slice(&f.image_pooled);
    v.extend_from_slice(&f.question_pooled);
    v.extend_from_slice(&f.answer_last);
    v.extend_from_slice(&[
        g.maxprob(),
        maxprob_logit(g.maxprob()),
        min_p,
        mean_p,
        end,
        mean_e,
        max_e,
        probs.len() as f32,
    ]);
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "selector feature {i} is not finite; the model produced NaN or infinite states"
        )));
    }
    Ok(v)
}
