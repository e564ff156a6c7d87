//! Idefics3's calibration batches: the training batches of `crate::train` (SmolVLM template,
//! one question per image, right-padded rows) and their answer loss.

use std::ops::Range;

use super::calibrate::{CalibStep, CalibrationSource};
use super::layout::DecoderLayout;
use crate::backend::cpu::CpuBackend;
use crate::error::Result;
use crate::eval::shapes::{Draw, Split};
use crate::model::generate::Vqa;
use crate::model::idefics3::{Idefics3, Idefics3Config};
use crate::model::params::SafetensorsParams;
use crate::model::tokenizer::VqaTokenizer;
use crate::train::{batch, batch_loss};

/// An Idefics3 checkpoint's config, tokenizer and `model.safetensors` bytes.
pub struct Idefics3Source<'a> {
    pub cfg: &'a Idefics3Config,
    pub tok: &'a VqaTokenizer,
    pub weights: &'a [u8],
}

impl<'a> Idefics3Source<'a> {
    pub fn new(cfg: &'a Idefics3Config, tok: &'a VqaTokenizer, weights: &'a [u8]) -> Self {
        Self { cfg, tok, weights }
    }
}

impl CalibrationSource for Idefics3Source<'_> {
    type Model = Vqa<CpuBackend>;

    fn layout(&self) -> DecoderLayout {
        let t = &self.cfg.text_config;
        DecoderLayout {
            layers_prefix: "model.text_model.layers.",
            layers: t.num_hidden_layers,
            v_feeds_o: t.kv_heads() == t.num_attention_heads,
        }
    }

    fn load(&self, backend: CpuBackend) -> Result<Self::Model> {
        let mut p = SafetensorsParams::new(backend.clone(), "model.safetensors", self.weights)?;
        let model = Idefics3::load(&mut p, self.cfg)?;
        Ok(Vqa::new(backend, model, self.tok.clone()))
    }

    /// Eight rows a batch: the vision tower runs batched, and the default model's graph for
    /// eight rows is small.
    fn samples_per_step(&self) -> usize {
        8
    }

    fn step(&self, vqa: &Self::Model, indices: Range<u64>) -> Result<CalibStep> {
        let b = batch::make_batch(vqa, Split::Train, indices, 1, Draw::EVAL)?;
        let loss = batch_loss(vqa, &b)?;
        let pad = self.tok.special.pad;
        let image = self.cfg.image_token_id;
        Ok(CalibStep {
            loss,
            valid: b.ids.iter().map(|&i| i != pad).collect(),
            vision: b.ids.iter().map(|&i| i == image).collect(),
        })
    }
}
