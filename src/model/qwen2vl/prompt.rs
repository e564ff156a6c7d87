//! Qwen2-VL's prompt: the checkpoint's chat template rendered for one user turn holding an
//! image then the question (`<|vision_start|><|image_pad|><|vision_end|>question`), then each
//! `<|image_pad|>` expanded to the image's token count (`t·h·w / merge²`), then tokenized, as
//! `Qwen2VLProcessor` does it. Without a template, Qwen2-VL-Instruct's own format is used.

use tokenizers::Tokenizer;

use super::vision::GridThw;
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;

pub const IMAGE_PAD: &str = "<|image_pad|>";
/// Longest question accepted, in bytes (the context is the real limit; this bounds the work).
const MAX_QUESTION_BYTES: usize = 4096;

/// Qwen2-VL-Instruct's format for one user turn with one image, when the checkpoint ships no
/// template.
fn default_prompt(question: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>{IMAGE_PAD}<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// The prompt text before image-token expansion.
pub fn prompt_text(template: Option<&ChatTemplate>, question: &str) -> Result<String> {
    if question.trim().is_empty() {
        return Err(Error::Question("the question is empty".into()));
    }
    if question.len() > MAX_QUESTION_BYTES {
        return Err(Error::Question(format!(
            "the question is {} bytes; at most {MAX_QUESTION_BYTES}",
            question.len()
        )));
    }
    if question.contains(IMAGE_PAD) {
        return Err(Error::Question(format!(
            "the question contains {IMAGE_PAD}, which marks image positions; remove it"
        )));
    }
    let Some(t) = template else {
        return Ok(default_prompt(question));
    };
    let messages = serde_json::json!([{
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": question}],
    }]);
    t.render_json(&messages, true)
}

/// Token ids of `text` with the `i`-th `<|image_pad|>` repeated for the `i`-th grid.
pub fn expand_and_tokenize(
    tok: &Tokenizer,
    text: &str,
    grids: &[GridThw],
    merge: usize,
) -> Result<Vec<u32>> {
    let pieces: Vec<&str> = text.split(IMAGE_PAD).collect();
    if pieces.len() - 1 != grids.len() {
        return Err(Error::Question(format!(
            "the prompt has {} image placeholder(s) but {} image(s) were given",
            pieces.len() - 1,
            grids.len()
        )));
    }
    let merge = merge.max(1);
    let mut expanded = String::with_capacity(text.len());
    for (i, piece) in pieces.iter().enumerate() {
        expanded.push_str(piece);
        if let Some(&[t, h, w]) = grids.get(i) {
            let n = t * (h / merge) * (w / merge);
            expanded.push_str(&IMAGE_PAD.repeat(n));
        }
    }
    let enc = tok
        .encode(expanded.as_str(), true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}
