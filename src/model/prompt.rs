//! The Idefics3 / SmolVLM chat prompt for one image and one question:
//!
//! `<|im_start|>User:{image block}{question}<end_of_utterance>\nAssistant:`
//!
//! which is what `Idefics3Processor` (transformers, `processing_idefics3.py`) produces from
//! SmolVLM's chat template. The image block for an image that is not split into tiles is
//! `<fake_token_around_image><global-img><image>×N<fake_token_around_image>` with
//! `N = image_seq_len`; for an image split into `rows × cols` tiles, see [`image_block_ids`].
//! The answer follows as ` {answer}<end_of_utterance>`.
//!
//! Text between special tokens is encoded piece by piece, exactly the pieces transformers'
//! tokenizer sees once it has split the specials out; the question is encoded on its own so a
//! literal `<image>` typed in it stays text.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
use crate::model::tokenizer::VqaTokenizer;

/// Longest question accepted, in bytes, before tokenizing (a cheap guard against huge inputs).
pub const MAX_QUESTION_BYTES: usize = 4096;
/// Idefics3Processor knows `<row_r_col_c>` tokens for r, c in 1..=6.
pub const MAX_TILE_GRID: usize = 6;

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// Positions of the question's own tokens (for the Selector's pooled question state).
    pub question: Range<usize>,
    /// Positions of the (global) image's tokens: the whole image, also when tiles precede it.
    pub image: Range<usize>,
}

/// The ids `Idefics3Processor.replace_image_token` puts in place of `<image>` for one image
/// split into `rows × cols` tiles (`(0, 0)`: not split), and where the global image's tokens
/// are within them. Tiles come row by row, each `<fake_token_around_image><row_r_col_c>` and
/// its image tokens, a newline after each row; then a newline and the global image.
pub fn image_block_ids(
    tok: &VqaTokenizer,
    image_seq_len: usize,
    rows: usize,
    cols: usize,
) -> Result<(Vec<u32>, Range<usize>)> {
    let sp = tok.special;
    let mut ids = Vec::new();
    if (rows == 0) != (cols == 0) || rows > MAX_TILE_GRID || cols > MAX_TILE_GRID {
        return Err(Error::Invalid(format!(
            "a {rows}x{cols} tile grid; Idefics3 splits into 1..={MAX_TILE_GRID} rows and columns, or 0x0 for an unsplit image"
        )));
    }
    if rows > 0 {
        let newline = tok.encode("\n")?;
        for r in 1..=rows {
            for c in 1..=cols {
                let name = format!("<row_{r}_col_{c}>");
                let id = tok.token_to_id(&name).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "tokenizer has no `{name}` token, which a {rows}x{cols} tiled image needs"
                    ))
                })?;
                ids.push(sp.fake_image);
                ids.push(id);
                ids.extend(std::iter::repeat_n(sp.image, image_seq_len));
            }
            if r < rows {
                ids.extend(&newline);
            }
        }
        // The last row's newline and the one before the global image are one text piece.
        ids.extend(tok.encode("\n\n")?);
    }
    ids.push(sp.fake_image);
    ids.push(sp.global_img);
    let image = ids.len()..ids.len() + image_seq_len;
    ids.extend(std::iter::repeat_n(sp.image, image_seq_len));
    ids.push(sp.fake_image);
    Ok((ids, image))
}

/// Build the prompt for an unsplit image; `max_len` is the context budget including room
/// for the answer.
pub fn build_prompt(
    tok: &VqaTokenizer,
    image_seq_len: usize,
    question: &str,
    max_len: usize,
) -> Result<Prompt> {
    build_prompt_tiled(tok, image_seq_len, (0, 0), question, max_len)
}

/// Build the prompt for an image split into a `(rows, cols)` tile grid plus the global image
/// (`(0, 0)`: not split), as Idefics3Processor with `do_image_splitting` does.
pub fn build_prompt_tiled(
    tok: &VqaTokenizer,
    image_seq_len: usize,
    grid: (usize, usize),
    question: &str,
    max_len: usize,
) -> Result<Prompt> {
    let q = checked_question(question)?;
    let sp = tok.special;
    let mut ids = vec![sp.im_start];
    ids.extend(tok.encode("User:")?);
    let (block, global) = image_block_ids(tok, image_seq_len, grid.0, grid.1)?;
    let image = ids.len() + global.start..ids.len() + global.end;
    ids.extend(block);
    let question = push_question(tok, &mut ids, q)?;
    ids.push(sp.end_of_utterance);
    // The newline is a token in real (byte-level BPE) tokenizers; word-level ones drop it.
    ids.extend(tok.encode("\nAssistant:")?);
    finish(ids, question, image, max_len)
}

/// The trimmed question, refused when empty or too long.
fn checked_question(question: &str) -> Result<&str> {
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
    Ok(q)
}

/// Append the question's own tokens (encoded on their own, so a literal `<image>` typed in it
/// stays text) and return where they are.
fn push_question(tok: &VqaTokenizer, ids: &mut Vec<u32>, q: &str) -> Result<Range<usize>> {
    let qs = ids.len();
    let q_ids = tok.encode(q)?;
    if q_ids.is_empty() {
        return Err(Error::Question(
            "the question has no tokens after normalisation".into(),
        ));
    }
    ids.extend(q_ids);
    Ok(qs..ids.len())
}

/// Build the prompt through the checkpoint's own chat template, as `Idefics3Processor` does:
/// the template renders one user turn (an image, then the question) with the assistant's turn
/// opened, and its `<image>` becomes the image block of [`image_block_ids`]. For SmolVLM's
/// template this is exactly [`build_prompt_tiled`]'s prompt; another checkpoint's template
/// (another role name, a system line) is followed as written.
pub fn build_prompt_templated(
    tok: &VqaTokenizer,
    template: &ChatTemplate,
    image_seq_len: usize,
    grid: (usize, usize),
    question: &str,
    max_len: usize,
) -> Result<Prompt> {
    const IMAGE: &str = "<image>";
    let q = checked_question(question)?;
    let messages = serde_json::json!([{
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": q}],
    }]);
    let text = template.render_json(&messages, true)?;
    let bad = |m: &str| Error::ChatTemplate(format!("{m}; the rendered prompt is {text:?}"));
    let (before, rest) = text
        .split_once(IMAGE)
        .ok_or_else(|| bad("the chat template put no `<image>` in the prompt"))?;
    let at = rest
        .find(q)
        .ok_or_else(|| bad("the chat template did not keep the question's text as it is"))?;
    let (between, after) = (&rest[..at], &rest[at + q.len()..]);
    if [before, between, after].iter().any(|t| t.contains(IMAGE)) {
        return Err(bad(
            "the chat template put more than one `<image>` in the prompt",
        ));
    }
    let mut ids = tok.encode(before)?;
    let (block, global) = image_block_ids(tok, image_seq_len, grid.0, grid.1)?;
    let image = ids.len() + global.start..ids.len() + global.end;
    ids.extend(block);
    ids.extend(tok.encode(between)?);
    let question = push_question(tok, &mut ids, q)?;
    ids.extend(tok.encode(after)?);
    finish(ids, question, image, max_len)
}

/// The prompt, refused when it leaves no room in the context.
fn finish(
    ids: Vec<u32>,
    question: Range<usize>,
    image: Range<usize>,
    max_len: usize,
) -> Result<Prompt> {
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
