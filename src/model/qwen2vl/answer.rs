//! Greedy answers from Qwen2-VL with the same outputs as Idefics3's
//! [`crate::model::generate::Vqa`]: answer tokens with their probabilities and entropies, the
//! terminator's probability, and the Selector's hidden-state features taken the same way
//! (mean over the image tokens, mean over the question's tokens, the last answer state).

use super::loader::{Inputs, Qwen2VlModel};
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::generate::{mean_rows, pick_greedy, row, softmax_at, AnswerFeatures, Generation};

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

    /// Answer the question in `inputs` (see [`Qwen2VlModel::inputs`]), at most
    /// `max_new_tokens` tokens, stopping at `<|im_end|>`.
    pub async fn answer(&self, inputs: &Inputs, max_new_tokens: usize) -> Result<Generation> {
        let b = &self.backend;
        let m = &self.model;
        let end = self
            .tokenizer
            .token_to_id(IM_END)
            .or(m.cfg.text.eos_token_id)
            .ok_or_else(|| Error::Tokenizer(format!("tokenizer has no {IM_END} token")))?;
        let ids = &inputs.ids;
        let s = ids.len();
        let px = b.upload(&inputs.pixels)?;
        let mut cache = m.new_cache(s + max_new_tokens + 1);
        let hidden = m.forward_prompt(b, ids, Some(&px), &inputs.grids, Some(&mut cache))?;
        let d = m.cfg.text.hidden_size;
        let host = b.read_f32(&hidden).await?;
        let host = HostTensor::new(vec![s, d], host.data)?;
        let img = m.cfg.image_token_id;
        let first = ids.iter().position(|&t| t == img).unwrap_or(0);
        let last = ids.iter().rposition(|&t| t == img).map_or(0, |i| i + 1);
        let image_pooled = mean_rows(&host, first..last);
        let question_pooled = mean_rows(&host, self.question_span(ids));
        let mut last_state = row(&host, s - 1);
        let mut last_hidden = b.narrow(&hidden, 1, s - 1, 1)?;

        let (mut tokens, mut probs, mut ents) = (Vec::new(), Vec::new(), Vec::new());
        let (mut end_prob, mut truncated, mut stepped) = (None, false, false);
        for step in 0..=max_new_tokens {
            let logits = b.read_f32(&m.logits(b, &last_hidden)?).await?;
            let (tok, p, ent) = pick_greedy(&logits.data).ok_or_else(|| Error::Backend {
                backend: b.name(),
                op: "generate",
                msg: "non-finite logits".into(),
            })?;
            if tok == end {
                end_prob = Some(p);
                break;
            }
            if step == max_new_tokens {
                end_prob = softmax_at(&logits.data, end);
                truncated = true;
                break;
            }
            tokens.push(tok);
            probs.push(p);
            ents.push(ent);
            last_hidden = m.forward_tokens(b, &[tok], &mut cache)?;
            stepped = true;
        }
        if stepped {
            last_state = b.read_f32(&last_hidden).await?.data;
        }
        let text = self
            .tokenizer
            .decode(&tokens, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Generation {
            text,
            tokens,
            token_probs: probs,
            end_prob,
            truncated,
            token_entropies: ents,
            features: AnswerFeatures {
                image_pooled,
                question_pooled,
                answer_last: last_state,
            },
            prompt_len: s,
        })
    }
}
