//! One answered question with everything the reliability report needs: accuracy, MaxProb, the
//! Selector confidences and (not serialised) the Selector features.
//!
//! Both the CLI report and the browser benchmark score questions through [`predict`], so the
//! two can only disagree if the model's arithmetic does.

use serde::{Deserialize, Serialize};

use super::ood::Item;
use crate::backend::Backend;
use crate::error::Result;
use crate::metrics::accuracy::vqa_accuracy;
use crate::model::generate::Vqa;
use crate::model::image::image_to_pixels;
use crate::selector::features::features;
use crate::selector::mlp::Selector;

/// One line of `predictions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub id: String,
    pub split: String,
    pub family: String,
    /// `id` for in-distribution questions, else the OOD kind.
    pub ood: String,
    pub question: String,
    pub answer: String,
    pub ground_truth: Vec<String>,
    pub acc: f64,
    /// Whether the ground truth is a word the model can say (false for some easy-VQA answers).
    pub answerable: bool,
    pub maxprob: f64,
    /// The variant's own Selector.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub selector: Option<f64>,
    /// The f16 model's Selector applied to this variant (robustness across quantization).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub selector_f16: Option<f64>,
    #[serde(skip)]
    pub features: Vec<f32>,
}

/// The Selectors to score answers with; either may be absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selectors<'a> {
    pub own: Option<&'a Selector>,
    pub f16: Option<&'a Selector>,
}

/// Answer `item` and score the answer.
pub async fn predict<B: Backend>(vqa: &Vqa<B>, item: &Item, sel: Selectors<'_>) -> Result<Scored> {
    let side = vqa.model.cfg.vision_config.image_size;
    let px = image_to_pixels(&item.image, side)?;
    let g = vqa.answer(&px, &item.question).await?;
    let feats = features(&g)?;
    let score = |s: Option<&Selector>| -> Result<Option<f64>> {
        s.map(|s| s.confidence(&feats).map(f64::from)).transpose()
    };
    Ok(Scored {
        id: item.id.clone(),
        split: item.split.clone(),
        family: item.family.clone(),
        ood: item.ood.map_or("id".into(), |k| k.name().to_string()),
        question: item.question.clone(),
        acc: vqa_accuracy(&g.text, &item.answers),
        answer: g.text.clone(),
        ground_truth: item.answers.clone(),
        answerable: item.answerable,
        maxprob: g.maxprob() as f64,
        selector: score(sel.own)?,
        selector_f16: score(sel.f16)?,
        features: feats,
    })
}
