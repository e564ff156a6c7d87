//! Qwen2-VL's calibration samples: the same `train`-split shapes samples Idefics3 calibrates
//! on, each through the checkpoint's own processor and chat template exactly as `relvqa ask`
//! prompts it, with the answer and `<|im_end|>` after the generation prompt and supervised
//! (what generation would produce, so the gradients are those of the answer it should give).

use std::ops::Range;

use candle_core::Tensor;
use safetensors::SafeTensors;

use super::calibrate::{CalibStep, CalibrationSource};
use super::layout::DecoderLayout;
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::eval::shapes::{self, Draw, Split};
use crate::model::chat::ChatTemplate;
use crate::model::loader::WEIGHTS_FILE;
use crate::model::qwen2vl::loader::{load_from_bytes_with, Qwen2VlModel};
use crate::model::qwen2vl::{text_layers_prefix, Qwen2VlConfig};

/// A Qwen2-VL checkpoint's files, as `relvqa quantize` read them.
pub struct Qwen2VlSource<'a> {
    cfg: Qwen2VlConfig,
    config: &'a [u8],
    tokenizer: &'a [u8],
    weights: &'a [u8],
    template: Option<ChatTemplate>,
    preprocessor: Option<&'a [u8]>,
    layers_prefix: &'static str,
}

impl<'a> Qwen2VlSource<'a> {
    pub fn new(
        config: &'a [u8],
        tokenizer: &'a [u8],
        weights: &'a [u8],
        template: Option<ChatTemplate>,
        preprocessor: Option<&'a [u8]>,
    ) -> Result<Self> {
        let text = std::str::from_utf8(config)
            .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
        let cfg = Qwen2VlConfig::from_json(text)?;
        let st = SafeTensors::deserialize(weights).map_err(|e| Error::WeightsFile {
            file: WEIGHTS_FILE.into(),
            msg: e.to_string(),
        })?;
        let layers_prefix = text_layers_prefix(|n| st.tensor(n).is_ok());
        Ok(Self {
            cfg,
            config,
            tokenizer,
            weights,
            template,
            preprocessor,
            layers_prefix,
        })
    }
}

impl CalibrationSource for Qwen2VlSource<'_> {
    type Model = Qwen2VlModel<CpuBackend>;

    fn layout(&self) -> DecoderLayout {
        let t = &self.cfg.text;
        DecoderLayout {
            layers_prefix: self.layers_prefix,
            layers: t.num_hidden_layers,
            v_feeds_o: t.num_key_value_heads == t.num_attention_heads,
        }
    }

    fn load(&self, backend: CpuBackend) -> Result<Self::Model> {
        load_from_bytes_with(
            backend,
            self.config,
            self.tokenizer,
            self.weights,
            self.template.clone(),
            self.preprocessor,
            None,
        )
    }

    /// One sample a pass: the model takes one prompt at a time (its M-RoPE positions and
    /// image runs are per prompt), and a real-size model's graph for one is already large.
    fn samples_per_step(&self) -> usize {
        1
    }

    fn step(&self, m: &Self::Model, indices: Range<u64>) -> Result<CalibStep> {
        let n = indices.end.saturating_sub(indices.start);
        if n == 0 {
            return Err(Error::Invalid("an empty calibration step".into()));
        }
        let (mut losses, mut valid, mut vision) = (Vec::new(), Vec::new(), Vec::new());
        for i in indices {
            let (loss, ids) = sample_loss(m, i)?;
            losses.push(loss);
            valid.extend(std::iter::repeat_n(true, ids.len()));
            vision.extend(ids.iter().map(|&t| t == self.cfg.image_token_id));
        }
        let loss = (Tensor::stack(&losses, 0)?.sum_all()? / n as f64)?;
        Ok(CalibStep {
            loss,
            valid,
            vision,
        })
    }
}

/// Mean cross-entropy of train sample `i`'s answer tokens and the `<|im_end|>` after them,
/// and the ids the decoder saw.
fn sample_loss(m: &Qwen2VlModel<CpuBackend>, i: u64) -> Result<(Tensor, Vec<u32>)> {
    let b = &m.backend;
    let s = shapes::sample_with_followups(Split::Train, i, 0, Draw::EVAL).0;
    let inputs = m.inputs(&s.image, &s.question.text)?;
    // The answer starts the assistant turn, right after the generation prompt's newline, so
    // it is tokenized on its own without a leading space.
    let answer = m
        .tokenizer
        .encode(s.question.answer.as_str(), false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?
        .get_ids()
        .to_vec();
    if answer.is_empty() {
        return Err(Error::Tokenizer(format!(
            "answer `{}` has no tokens",
            s.question.answer
        )));
    }
    let last_prompt = inputs
        .ids
        .len()
        .checked_sub(1)
        .ok_or_else(|| Error::Question("the prompt is empty".into()))?;
    let mut ids = inputs.ids;
    ids.extend(&answer);
    let mut targets = answer;
    targets.push(m.end_token()?);
    let px = b.upload(&inputs.pixels)?;
    let h = m
        .model
        .forward_prompt(b, &ids, Some(&px), &inputs.grids, None)?;
    let d = m.model.cfg.text.hidden_size;
    // Position `p` predicts token `p + 1`: the prompt's last position the first answer token.
    let h = h
        .reshape((ids.len(), d))?
        .narrow(0, last_prompt, targets.len())?;
    let logits = m.model.logits(b, &h)?;
    let targets = Tensor::from_slice(&targets, targets.len(), b.device())?;
    let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
    Ok((loss, ids))
}
