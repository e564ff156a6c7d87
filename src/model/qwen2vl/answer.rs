//! Greedy answers from Qwen2-VL with the same outputs as Idefics3's
//! [`crate::model::generate::Vqa`]: answer tokens with their probabilities and entropies, the
//! terminator's probability, and the Selector's hidden-state features taken the same way
//! (mean over the image tokens, mean over the question's tokens, the last answer state).

use super::loader::{Inputs, Qwen2VlModel};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::generate::{decode_greedy, FeatureSpans, Generation};

/// The token that ends an assistant turn in Qwen2-VL's chat format.
pub const IM_END: &str = "<|im_end|>";

impl<B: Backend> Qwen2VlModel<B> {
    /// Where the question's own tokens are: after the last image run's `<|vision_end|>` (or
    /// the last image token) up to the next `<|im_end|>`.
    fn question_span(&self, ids: &[u32]) -> std::ops::Range<usize> {
        let img = self.model.cfg.image_token_id;
        let after_image = ids.iter().rposition(|&t| t == img).map_or(0, |i| i + 1);
        let start = match self.model.cfg.vision_end_token_id {
            Some(end) if ids.get(after_image) == Some(&end) => after_image + 1,
            _ => after_image,
        };
        let im_end = self.tokenizer.token_to_id(IM_END);
        let stop = ids[start..]
            .iter()
            .position(|t| Some(*t) == im_end)
            .map_or(ids.len(), |p| start + p);
        start..stop.max(start)
    }

    /// The token that ends an answer: `<|im_end|>`, or the config's `eos_token_id` for a
    /// tokenizer without it. MBQ's calibration supervises it after each answer, as generation
    /// stops on it.
    pub fn end_token(&self) -> Result<u32> {
        self.tokenizer
            .token_to_id(IM_END)
            .or(self.model.cfg.text.eos_token_id)
            .ok_or_else(|| Error::Tokenizer(format!("tokenizer has no {IM_END} token")))
    }

    /// Answer the question in `inputs` (see [`Qwen2VlModel::inputs`]), at most
    /// `max_new_tokens` tokens, stopping at `<|im_end|>`.
    pub async fn answer(&self, inputs: &Inputs, max_new_tokens: usize) -> Result<Generation> {
        let b = &self.backend;
        let m = &self.model;
        let end = self.end_token()?;
        let ids = &inputs.ids;
        let px = b.upload(&inputs.pixels)?;
        let mut cache = m.new_cache(ids.len() + max_new_tokens + 1);
        let hidden = m.forward_prompt(b, ids, Some(&px), &inputs.grids, Some(&mut cache))?;
        let img = m.cfg.image_token_id;
        let first = ids.iter().position(|&t| t == img).unwrap_or(0);
        let last = ids.iter().rposition(|&t| t == img).map_or(0, |i| i + 1);
        let spans = FeatureSpans {
            image: first..last,
            question: self.question_span(ids),
        };
        let mut g = decode_greedy(
            b,
            &hidden,
            spans,
            end,
            max_new_tokens,
            |h| m.logits(b, h),
            |tok| m.forward_tokens(b, &[tok], &mut cache),
        )
        .await?;
        g.text = self
            .tokenizer
            .decode(&g.tokens, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(g)
    }

    /// Answer `question` about a decoded image: its processor, its chat template, at most
    /// `max_new_tokens` tokens.
    pub async fn answer_image(&self, img: &image::RgbImage, question: &str) -> Result<Generation> {
        let inputs = self.inputs(img, question)?;
        self.answer(&inputs, self.max_new_tokens).await
    }

    /// A throw-away one-token answer about the smallest blank image the processor accepts, so
    /// that WebGPU creates every pipeline during the load (the page's `compile` stage) at a
    /// fraction of a full answer's cost.
    pub async fn warm_up(&self) -> Result<()> {
        let side = self.processor.patch_size * self.model.cfg.vision.spatial_merge_size.max(1);
        let min_side = ((self.processor.min_pixels as f64).sqrt().ceil() as usize).max(side);
        let side = min_side.div_ceil(side) * side;
        let img = image::RgbImage::new(side as u32, side as u32);
        let inputs = self.inputs(&img, "What is this?")?;
        self.answer(&inputs, 1).await.map(drop)
    }
}
