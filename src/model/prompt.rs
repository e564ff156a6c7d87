//! The Idefics3 / SmolVLM chat prompt for one image and one question:
//!
//! `<|im_start|>User:<fake_token_around_image><global-img><image>×N<fake_token_around_image>`
//! `{question}<end_of_utterance>\nAssistant:`
//!
//! which is what `Idefics3Processor` produces for an image that is not split into tiles, with
//! `N = image_seq_len`. The answer follows as ` {answer}<end_of_utterance>`.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::tokenizer::VqaTokenizer;

/// Longest question accepted, in bytes, before tokenizing (a cheap guard against huge inputs).
pub const MAX_QUESTION_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// Positions of the question's own tokens (for the Selector's pooled question state).
    pub question: Range<usize>,
    /// Positions of the image tokens.
    pub image: Range<usize>,
}

/// Build the prompt; `max_len` is the context budget including room for the answer.
pub fn build_prompt(
    tok: &VqaTokenizer,
    image_seq_len: usize,
    question: &str,
    max_len: usize,
) -> Result<Prompt> {
    let q = question.trim();
    if q.is_empty() {
        return Err(Error::Question(
            "the question is empty; type a question about the image".into(),
        ));
    }
    if q.len() > MAX_QUESTION_BYTES {
        return Err(Error::Question(format!(
            "the question is {} bytes long; the limit is {MAX_QUESTION_BYTES}",
            q.len()
        )));
    }
    let sp = tok.special;
    let mut ids = vec![sp.im_start];
    ids.extend(tok.encode("User:")?);
    ids.push(sp.fake_image);
    ids.push(sp.global_img);
    let image = ids.len()..ids.len() + image_seq_len;
    ids.extend(std::iter::repeat_n(sp.image, image_seq_len));
    ids.push(sp.fake_image);
    let qs = ids.len();
    let q_ids = tok.encode(q)?;
    if q_ids.is_empty() {
        return Err(Error::Question(
            "the question has no tokens after normalisation".into(),
        ));
    }
    ids.extend(q_ids);
    let question = qs..ids.len();
    ids.push(sp.end_of_utterance);
    ids.extend(tok.encode("Assistant:")?);
    if ids.len() > max_len {
        return Err(Error::Question(format!(
            "the prompt is {} tokens (question {} tokens) but the model's context leaves room for {max_len}; shorten the question",
            ids.len(),
            question.len()
        )));
    }
    Ok(Prompt {
        ids,
        question,
        image,
    })
}
