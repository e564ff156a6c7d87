//! Text-only use of the decoder: greedy generation from a token prompt and perplexity over a
//! text. A VLM's language model is where quantization error lands first, and a converted
//! real checkpoint (SmolLM2 from GGUF, `relvqa convert`) has only real *language* weights, so
//! these are the real-weight checks of the quantizers. Nothing here reads a clock (wasm has
//! none in the library): callers time [`TextDecoder::start`] and the steps themselves.

use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::decoder::KvCache;
use crate::model::generate::{pick_greedy, Vqa};
use crate::model::qwen2vl::loader::Qwen2VlModel;

/// A language model seen without its vision tower: what text-only generation needs from
/// either family. The two differ in how a prompt starts (Qwen2-VL's M-RoPE sets the cache's
/// position offset in the prefill) and in their tokenizers; the greedy loop, its stop rule and
/// its timing are the same, so they are written once against this trait.
pub trait CausalLm<B: Backend> {
    fn lm_backend(&self) -> &B;
    /// Positions the model has (prompt plus new tokens).
    fn context(&self) -> usize;
    fn lm_cache(&self, positions: usize) -> KvCache<B>;
    /// The prompt's final hidden states `[1, s, d]`, into an empty cache.
    fn prefill(&self, ids: &[u32], cache: &mut KvCache<B>) -> Result<B::Tensor>;
    /// One more token after the cache's contents.
    fn step(&self, token: u32, cache: &mut KvCache<B>) -> Result<B::Tensor>;
    fn lm_logits(&self, hidden: &B::Tensor) -> Result<B::Tensor>;
    fn encode_text(&self, text: &str) -> Result<Vec<u32>>;
    fn decode_text(&self, ids: &[u32]) -> Result<String>;
    fn token_id(&self, token: &str) -> Option<u32>;
    fn eos_ids(&self) -> Vec<u32>;

    /// Tokens that end an assistant turn in the chat formats we know (where the vocabulary
    /// has them), plus the config's end-of-sequence ids.
    fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = ["<|im_end|>", "<end_of_utterance>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| self.token_id(t))
            .collect();
        ids.extend(self.eos_ids());
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl<B: Backend> CausalLm<B> for Vqa<B> {
    fn lm_backend(&self) -> &B {
        &self.backend
    }
    fn context(&self) -> usize {
        self.model.cfg.text_config.max_position_embeddings
    }
    fn lm_cache(&self, positions: usize) -> KvCache<B> {
        self.model.new_cache(positions)
    }
    fn prefill(&self, ids: &[u32], cache: &mut KvCache<B>) -> Result<B::Tensor> {
        self.model
            .forward_tokens(&self.backend, ids, 1, Some(cache))
    }
    fn step(&self, token: u32, cache: &mut KvCache<B>) -> Result<B::Tensor> {
        self.model
            .forward_tokens(&self.backend, &[token], 1, Some(cache))
    }
    fn lm_logits(&self, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.model.logits(&self.backend, hidden)
    }
    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }
    fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
    fn eos_ids(&self) -> Vec<u32> {
        self.model
            .cfg
            .text_config
            .eos_token_id
            .into_iter()
            .collect()
    }
}

impl<B: Backend> CausalLm<B> for Qwen2VlModel<B> {
    fn lm_backend(&self) -> &B {
        &self.backend
    }
    fn context(&self) -> usize {
        self.model.cfg.text.max_position_embeddings
    }
    fn lm_cache(&self, positions: usize) -> KvCache<B> {
        self.model.new_cache(positions)
    }
    fn prefill(&self, ids: &[u32], cache: &mut KvCache<B>) -> Result<B::Tensor> {
        self.model
            .forward_prompt(&self.backend, ids, None, &[], Some(cache))
    }
    fn step(&self, token: u32, cache: &mut KvCache<B>) -> Result<B::Tensor> {
        self.model.forward_tokens(&self.backend, &[token], cache)
    }
    fn lm_logits(&self, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.model.logits(&self.backend, hidden)
    }
    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }
    fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }
    fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }
    fn eos_ids(&self) -> Vec<u32> {
        self.model.cfg.text.eos_token_id.into_iter().collect()
    }
}

/// An in-progress greedy decode: the KV cache and the hidden state the next token comes from.
pub struct TextDecoder<'a, B: Backend, M: CausalLm<B>> {
    lm: &'a M,
    cache: KvCache<B>,
    last: B::Tensor,
    /// Tokens in the cache (prompt plus pushed tokens).
    pub len: usize,
}

/// What [`generate_text`] returns.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextGeneration {
    pub prompt_tokens: usize,
    /// Generated ids, without the stop token.
    pub ids: Vec<u32>,
    pub text: String,
    /// A stop token ended it (else it hit the token limit).
    pub stopped: bool,
    /// Prompt in, first logits out (0 without a clock).
    pub prefill_ms: f64,
    /// The single-token forward passes after the prefill, and their time (0 without a clock).
    pub decode_steps: usize,
    pub decode_ms: f64,
}

/// Longest prompt text [`generate_text`]'s callers tokenize: far beyond any context
/// these models have, small enough that tokenizing it cannot stall a tab.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// A [`TextGeneration`] as `relvqa generate --json` prints it and the page's `generate`
/// resolves to: rates next to the raw times, so neither side computes them its own way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TextReport<'a> {
    pub prompt: &'a str,
    pub text: &'a str,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub ids: &'a [u32],
    pub stopped: bool,
    pub backend: &'static str,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

impl TextGeneration {
    pub fn report<'a>(&'a self, prompt: &'a str, backend: &'static str) -> TextReport<'a> {
        let rate = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        TextReport {
            prompt,
            text: &self.text,
            prompt_tokens: self.prompt_tokens,
            new_tokens: self.ids.len(),
            ids: &self.ids,
            stopped: self.stopped,
            backend,
            prefill_ms: self.prefill_ms,
            prefill_tokens_per_s: rate(self.prompt_tokens, self.prefill_ms),
            decode_ms: self.decode_ms,
            decode_tokens_per_s: rate(self.decode_steps, self.decode_ms),
        }
    }
}

fn non_finite<B: Backend>(b: &B, op: &'static str) -> Error {
    Error::Backend {
        backend: b.name(),
        op,
        msg: "non-finite logits".into(),
    }
}

impl<'a, B: Backend, M: CausalLm<B>> TextDecoder<'a, B, M> {
    /// Prefill `ids` (no image) with room for `max_new` more tokens.
    pub fn start(lm: &'a M, ids: &[u32], max_new: usize) -> Result<Self> {
        let ctx = lm.context();
        if ids.is_empty() {
            return Err(Error::Question("the prompt has no tokens".into()));
        }
        if ids.len() + max_new > ctx {
            return Err(Error::Question(format!(
                "the prompt is {} tokens and {max_new} more were asked for, but the model's context is {ctx}",
                ids.len()
            )));
        }
        let mut cache = lm.lm_cache(ids.len() + max_new);
        let hidden = lm.prefill(ids, &mut cache)?;
        let last = lm.lm_backend().narrow(&hidden, 1, ids.len() - 1, 1)?;
        Ok(Self {
            lm,
            cache,
            last,
            len: ids.len(),
        })
    }

    /// Logits for the next token (reading them back is what waits for the GPU).
    pub async fn next_logits(&self) -> Result<Vec<f32>> {
        let b = self.lm.lm_backend();
        Ok(b.read_f32(&self.lm.lm_logits(&self.last)?).await?.data)
    }

    /// Append `token` and run it through the decoder.
    pub fn push(&mut self, token: u32) -> Result<()> {
        self.last = self.lm.step(token, &mut self.cache)?;
        self.len += 1;
        Ok(())
    }
}

/// Greedy continuation of `prompt` until a token in `stop` or `max_new` tokens. `now` is a
/// millisecond clock (the library has none of its own on wasm) that splits the time into
/// prefill and decode.
pub async fn generate_text<B: Backend, M: CausalLm<B>>(
    lm: &M,
    prompt: &[u32],
    max_new: usize,
    stop: &[u32],
    now: &dyn Fn() -> f64,
) -> Result<TextGeneration> {
    if max_new == 0 {
        return Err(Error::Invalid(
            "asked for 0 new tokens; ask for at least 1".into(),
        ));
    }
    let t0 = now();
    let mut dec = TextDecoder::start(lm, prompt, max_new)?;
    let mut logits = dec.next_logits().await?;
    let t1 = now();
    let mut ids = Vec::new();
    let (mut stopped, mut decode_steps) = (false, 0);
    for step in 0..max_new {
        let (tok, _, _) =
            pick_greedy(&logits).ok_or_else(|| non_finite(lm.lm_backend(), "generate_text"))?;
        if stop.contains(&tok) {
            stopped = true;
            break;
        }
        ids.push(tok);
        if step + 1 < max_new {
            dec.push(tok)?;
            logits = dec.next_logits().await?;
            decode_steps += 1;
        }
    }
    let t2 = now();
    Ok(TextGeneration {
        prompt_tokens: prompt.len(),
        text: lm.decode_text(&ids)?,
        ids,
        stopped,
        prefill_ms: t1 - t0,
        decode_steps,
        decode_ms: t2 - t1,
    })
}

impl<B: Backend> Vqa<B> {
    /// Sum of negative log-likelihoods (nats) of `ids` and how many tokens were scored, in
    /// independent windows of `window` tokens (the first token of each window is context
    /// only). Perplexity is `exp(sum / count)`.
    pub async fn text_nll(&self, ids: &[u32], window: usize) -> Result<(f64, usize)> {
        let ctx = self.model.cfg.text_config.max_position_embeddings;
        if window < 2 || window > ctx {
            return Err(Error::Invalid(format!(
                "perplexity window {window} must be in 2..={ctx} (the model's context)"
            )));
        }
        let b = &self.backend;
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in ids.chunks(window).filter(|c| c.len() >= 2) {
            let hidden = self.model.forward_tokens(b, chunk, 1, None)?;
            let logits = b.read_f32(&self.model.logits(b, &hidden)?).await?;
            let v = logits.data.len() / chunk.len();
            for (pos, next) in chunk.iter().skip(1).enumerate() {
                sum += nll_at(&logits, pos, v, *next).ok_or_else(|| non_finite(b, "text_nll"))?;
                count += 1;
            }
        }
        Ok((sum, count))
    }
}

/// `-log softmax(row)[target]` of row `pos` of `[s, v]` logits.
fn nll_at(logits: &HostTensor, pos: usize, v: usize, target: u32) -> Option<f64> {
    let row = logits.data.get(pos * v..(pos + 1) * v)?;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        return None;
    }
    let lse = max
        + row
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    Some(lse - *row.get(target as usize)? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_a_uniform_row_is_log_v() {
        let t = HostTensor {
            shape: vec![2, 4],
            data: vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0],
        };
        let a = nll_at(&t, 0, 4, 2).unwrap_or(f64::NAN);
        assert!((a - 4f64.ln()).abs() < 1e-9);
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp() + 4f64.exp()).ln();
        let b = nll_at(&t, 1, 4, 3).unwrap_or(f64::NAN);
        assert!((b - (lse - 4.0)).abs() < 1e-9);
        assert_eq!(nll_at(&t, 1, 4, 9), None);
        assert_eq!(nll_at(&t, 2, 4, 0), None);
    }
}
