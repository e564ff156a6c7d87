//! Accuracy of a model on a split of the shapes dataset, overall and per question family.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ood::sample_item;
use super::predict::{predict, Selectors};
use super::shapes::{self, Split};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::generate::Vqa;

// Moved to the metrics layer, which must not depend on the model; re-exported for callers.
pub use crate::metrics::accuracy::normalize_answer;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    pub index: u64,
    pub family: shapes::Family,
    pub question: String,
    pub answer: String,
    pub prediction: String,
    pub correct: bool,
    pub maxprob: f32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FamilyScore {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    pub n: usize,
    pub accuracy: f64,
    pub per_family: BTreeMap<String, FamilyScore>,
    pub predictions: Vec<Prediction>,
}

pub fn summarize(split: Split, predictions: Vec<Prediction>) -> EvalReport {
    let mut per_family: BTreeMap<String, FamilyScore> = BTreeMap::new();
    for p in &predictions {
        let e = per_family.entry(p.family.name().to_string()).or_default();
        e.n += 1;
        e.correct += p.correct as usize;
    }
    for s in per_family.values_mut() {
        s.accuracy = s.correct as f64 / s.n.max(1) as f64;
    }
    let correct = predictions.iter().filter(|p| p.correct).count();
    EvalReport {
        split: split.name().into(),
        n: predictions.len(),
        accuracy: correct as f64 / predictions.len().max(1) as f64,
        per_family,
        predictions,
    }
}

/// Accuracy of a guesser that ignores the image and gives each question family's most common
/// answer on the first `n` questions of `split`: the floor a model must clear to be looking.
pub fn prior_only_accuracy(split: Split, n: usize) -> f64 {
    let mut counts: BTreeMap<(shapes::Family, String), usize> = BTreeMap::new();
    for i in 0..n as u64 {
        let q = shapes::sample(split, i).question;
        *counts.entry((q.family, q.answer)).or_default() += 1;
    }
    let mut best: BTreeMap<shapes::Family, usize> = BTreeMap::new();
    for ((f, _), c) in counts {
        let b = best.entry(f).or_default();
        *b = (*b).max(c);
    }
    best.values().sum::<usize>() as f64 / n.max(1) as f64
}

/// Greedy-answer the first `limit` samples of `split`; `progress(done)` is called after each.
/// Scores through [`predict`], the one answer-and-score path the report and the page use.
pub async fn evaluate<B: Backend>(
    vqa: &Vqa<B>,
    split: Split,
    limit: usize,
    mut progress: impl FnMut(usize),
) -> Result<EvalReport> {
    let mut preds = Vec::with_capacity(limit);
    for i in 0..limit as u64 {
        let sample = shapes::sample(split, i);
        let family = sample.question.family;
        let item = sample_item(sample);
        let s = predict(vqa, &item, Selectors::default()).await?;
        preds.push(Prediction {
            index: i,
            family,
            question: s.question,
            answer: s.ground_truth.join("|"),
            prediction: s.answer,
            correct: s.acc >= 1.0,
            maxprob: s.maxprob as f32,
        });
        progress(preds.len());
    }
    Ok(summarize(split, preds))
}
