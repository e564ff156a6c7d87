//! Greedy generation with a KV cache, returning what the reliability layer needs besides the
//! answer: each token's probability and the hidden states the Selector is trained on.

use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::idefics3::processor::{preprocess, ProcessedImage, ProcessorOptions};
use crate::model::idefics3::Idefics3;
use crate::model::image::image_to_pixels;
use crate::model::prompt::{build_prompt_templated, build_prompt_tiled, Prompt};
use crate::model::tokenizer::VqaTokenizer;

/// Detached hidden-state features of one answer (final-norm outputs of the text model).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnswerFeatures {
    /// Mean over the image-token positions of the prompt.
    pub image_pooled: Vec<f32>,
    /// Mean over the question's own tokens.
    pub question_pooled: Vec<f32>,
    /// State at the last answer token (the one that predicted the end of the answer).
    pub answer_last: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub text: String,
    /// Answer tokens, without the terminating `<end_of_utterance>`.
    pub tokens: Vec<u32>,
    /// Probability of each answer token under the model when it was chosen.
    pub token_probs: Vec<f32>,
    /// Probability of the terminator where the answer ended, or, for an answer cut off at
    /// `max_new_tokens`, its probability at the cut. `None` only for a generation that never
    /// computed a distribution (`max_new_tokens == 0` is the only way).
    pub end_prob: Option<f32>,
    /// The answer hit `max_new_tokens` without a terminator.
    #[serde(default)]
    pub truncated: bool,
    /// Entropy (nats) of the next-token distribution at each answer step.
    pub token_entropies: Vec<f32>,
    pub features: AnswerFeatures,
    pub prompt_len: usize,
}

impl Generation {
    /// MaxProb: the probability of the complete answer string, the product of its token
    /// probabilities and its terminator's. The terminator matters: without it a runaway
    /// answer ("6 6 6 6 6 6 6 6", cut at the token limit on an image unlike any in training)
    /// scored 0.84 while the model gave its end only a small probability.
    pub fn maxprob(&self) -> f32 {
        self.token_probs.iter().product::<f32>() * self.end_prob.unwrap_or(1.0)
    }
}

/// A model ready to answer: backend, weights, tokenizer.
#[derive(Debug, Clone)]
pub struct Vqa<B: Backend> {
    pub backend: B,
    pub model: Idefics3<B>,
    pub tokenizer: VqaTokenizer,
    pub max_new_tokens: usize,
    /// The checkpoint's chat template, when the prompt should come from it
    /// ([`crate::model::prompt::build_prompt_templated`]); `None`: SmolVLM's format, built in.
    pub chat: Option<crate::model::chat::ChatTemplate>,
    /// The checkpoint's image processor when it splits images into tiles
    /// (`preprocessor_config.json` with `do_image_splitting`, as real SmolVLM / Idefics3
    /// checkpoints ship); `None`: one image resized to the vision tower's input, which is what
    /// the shapes model's processor does for its square images.
    pub processor: Option<ProcessorOptions>,
}

/// Softmax of one logit row on the host: (argmax, its probability, entropy).
pub fn pick_greedy(logits: &[f32]) -> Option<(u32, f32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let (mut best, mut best_p) = (0usize, -1f32);
    let mut entropy = 0f32;
    for (i, e) in exps.iter().enumerate() {
        let p = e / sum;
        if p > best_p {
            best = i;
            best_p = p;
        }
        if p > 0.0 {
            entropy -= p * p.ln();
        }
    }
    Some((best as u32, best_p, entropy))
}

/// Softmax probability of token `id` in one logit row.
pub(crate) fn softmax_at(logits: &[f32], id: u32) -> Option<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    logits
        .get(id as usize)
        .map(|l| (l - max).exp() / sum)
        .filter(|p| p.is_finite())
}

pub(crate) fn mean_rows(h: &HostTensor, rows: std::ops::Range<usize>) -> Vec<f32> {
    let d = h.shape.last().copied().unwrap_or(0);
    let mut out = vec![0f32; d];
    let n = rows.len().max(1) as f32;
    for r in rows {
        for (o, v) in out.iter_mut().zip(&h.data[r * d..(r + 1) * d]) {
            *o += v / n;
        }
    }
    out
}

pub(crate) fn row(h: &HostTensor, r: usize) -> Vec<f32> {
    let d = h.shape.last().copied().unwrap_or(0);
    h.data[r * d..(r + 1) * d].to_vec()
}

/// Where a prompt's Selector features are pooled from.
pub struct FeatureSpans {
    pub image: std::ops::Range<usize>,
    pub question: std::ops::Range<usize>,
}

/// Greedy decoding after a prompt's forward pass, shared by every architecture so that answer
/// probabilities, the terminator's probability and the Selector's features are taken the same
/// way whichever model produced them (the Selector is trained on these numbers).
///
/// `hidden`: the prompt's final states `[1, s, d]`; `logits` maps states to vocabulary logits;
/// `forward_token` runs one decode step through the model's KV cache and returns its state.
/// Returns a [`Generation`] whose `text` is empty: decoding ids to text is the tokenizer's.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn decode_greedy<B: Backend>(
    b: &B,
    hidden: &B::Tensor,
    spans: FeatureSpans,
    end: u32,
    max_new_tokens: usize,
    logits: impl Fn(&B::Tensor) -> Result<B::Tensor>,
    mut forward_token: impl FnMut(u32) -> Result<B::Tensor>,
) -> Result<Generation> {
    let shape = b.shape(hidden);
    let (s, d) = match shape[..] {
        [1, s, d] if s > 0 => (s, d),
        _ => {
            return Err(Error::Invalid(format!(
                "prompt states {shape:?} are not [1, s > 0, d]"
            )))
        }
    };
    let host = b.read_f32(hidden).await?;
    let host = HostTensor::new(vec![s, d], host.data)?;
    let image_pooled = mean_rows(&host, spans.image);
    let question_pooled = mean_rows(&host, spans.question);
    let mut last_state = row(&host, s - 1);
    let mut last_hidden = b.narrow(hidden, 1, s - 1, 1)?;

    let (mut tokens, mut probs, mut ents) = (Vec::new(), Vec::new(), Vec::new());
    let (mut end_prob, mut truncated, mut stepped) = (None, false, false);
    for step in 0..=max_new_tokens {
        let logits = b.read_f32(&logits(&last_hidden)?).await?;
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
        last_hidden = forward_token(tok)?;
        stepped = true;
    }
    // Only the final state is a feature: read it once, not after every step (on a GPU each
    // read is a submit and a wait).
    if stepped {
        last_state = b.read_f32(&last_hidden).await?.data;
    }
    Ok(Generation {
        text: String::new(),
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

impl<B: Backend> Vqa<B> {
    pub fn new(backend: B, model: Idefics3<B>, tokenizer: VqaTokenizer) -> Self {
        Self {
            backend,
            model,
            tokenizer,
            max_new_tokens: 8,
            chat: None,
            processor: None,
        }
    }

    /// Use the checkpoint's `preprocessor_config.json` (its bytes): a processor that splits
    /// images makes [`Vqa::answer_image`] tile them; one that does not changes nothing.
    pub fn set_processor(&mut self, preprocessor_config: Option<&[u8]>) -> Result<()> {
        self.processor = match preprocessor_config {
            None => None,
            Some(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    Error::Config(format!(
                        "{} is not UTF-8",
                        crate::model::loader::PREPROCESSOR_FILE
                    ))
                })?;
                let opts = ProcessorOptions::from_preprocessor_json(text)?;
                opts.split.then_some(opts)
            }
        };
        Ok(())
    }

    /// Answer `question` about a decoded image, prepared as the checkpoint's processor would
    /// (tiles when it splits, else one image at the vision tower's size): the path `relvqa
    /// ask` and the page share.
    pub async fn answer_image(&self, img: &image::RgbImage, question: &str) -> Result<Generation> {
        let image = match &self.processor {
            Some(opts) => preprocess(img, opts)?,
            None => ProcessedImage {
                pixels: image_to_pixels(img, self.model.cfg.vision_config.image_size)?,
                rows: 0,
                cols: 0,
            },
        };
        self.answer_processed(&image, question).await
    }

    /// The prompt for `question`, refusing questions that leave no room for an answer.
    pub fn prompt(&self, question: &str) -> Result<Prompt> {
        self.prompt_tiled((0, 0), question)
    }

    /// [`Vqa::prompt`] for an image split into a `(rows, cols)` tile grid plus its global image.
    fn prompt_tiled(&self, grid: (usize, usize), question: &str) -> Result<Prompt> {
        let ctx = self.model.cfg.text_config.max_position_embeddings;
        let budget = ctx.saturating_sub(self.max_new_tokens + 1);
        let n = self.model.cfg.image_seq_len();
        match &self.chat {
            Some(t) => build_prompt_templated(&self.tokenizer, t, n, grid, question, budget),
            None => build_prompt_tiled(&self.tokenizer, n, grid, question, budget),
        }
    }

    /// Answer `question` about `pixels [1, 3, s, s]` (see [`crate::model::image::image_to_pixels`]).
    pub async fn answer(&self, pixels: &HostTensor, question: &str) -> Result<Generation> {
        let prompt = self.prompt(question)?;
        self.answer_prompt(pixels, &prompt).await
    }

    /// Answer `question` about an image the checkpoint's own processor prepared
    /// ([`crate::model::idefics3::processor::preprocess`]): a real SmolVLM / Idefics3
    /// checkpoint splits a large image into tiles plus a global image, and the prompt names
    /// each tile (`<row_r_col_c>`), exactly as `Idefics3Processor` builds it.
    pub async fn answer_processed(
        &self,
        image: &ProcessedImage,
        question: &str,
    ) -> Result<Generation> {
        let prompt = self.prompt_tiled((image.rows, image.cols), question)?;
        self.answer_prompt(&image.pixels, &prompt).await
    }

    pub async fn answer_prompt(&self, pixels: &HostTensor, prompt: &Prompt) -> Result<Generation> {
        self.answer_within(pixels, prompt, self.max_new_tokens)
            .await
    }

    /// A throw-away answer of at most one token about a blank image: the prefill and one
    /// decode step run every kind of op an answer runs (on WebGPU that creates every compute
    /// pipeline, the page's `compile` stage) at a fraction of a full answer's cost.
    pub async fn warm_up(&self) -> Result<()> {
        let s = self.model.cfg.vision_config.image_size;
        let px = HostTensor::new(vec![1, 3, s, s], vec![0.0; 3 * s * s])?;
        let prompt = self.prompt("what color is the shape ?")?;
        self.answer_within(&px, &prompt, 1).await.map(drop)
    }

    async fn answer_within(
        &self,
        pixels: &HostTensor,
        prompt: &Prompt,
        max_new_tokens: usize,
    ) -> Result<Generation> {
        let b = &self.backend;
        let m = &self.model;
        let eou = self.tokenizer.special.end_of_utterance;
        let px = b.upload(pixels)?;
        let mut cache = m.new_cache(prompt.ids.len() + max_new_tokens + 1);
        let hidden = m.forward_hidden(b, &prompt.ids, 1, Some(&px), Some(&mut cache))?;
        let spans = FeatureSpans {
            image: prompt.image.clone(),
            question: prompt.question.clone(),
        };
        let mut g = decode_greedy(
            b,
            &hidden,
            spans,
            eou,
            max_new_tokens,
            |h| m.logits(b, h),
            |tok| m.forward_tokens(b, &[tok], 1, Some(&mut cache)),
        )
        .await?;
        g.text = self.tokenizer.decode(&g.tokens)?;
        Ok(g)
    }
}
