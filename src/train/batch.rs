//! Turning shapes samples into padded training batches.
//!
//! A training row is a multi-turn chat about one image in the SmolVLM template
//! (`<|im_start|>User:<image…>Q1<end_of_utterance>\nAssistant: A1<end_of_utterance>\nUser: Q2…`),
//! with 1 to `turns` questions. The vision tower is the dearest part of a step, so several
//! answers per image multiply the supervision per unit of compute. The first turn is exactly
//! the single-question prompt used at inference (causal attention cannot see later turns).

use crate::backend::cpu::CpuBackend;
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::eval::shapes::{self, Draw, Split};
use crate::model::generate::Vqa;
use crate::model::image::image_to_pixels;
use crate::model::tokenizer::VqaTokenizer;

/// One batch: right-padded ids (image tokens sit at the same positions in every row, which
/// `embed_multimodal` relies on), pixels, and the supervised (flat position, target) pairs.
pub struct Batch {
    pub ids: Vec<u32>,
    pub rows: usize,
    pub seq: usize,
    pub pixels: HostTensor,
    /// Flat indices `row * seq + pos` whose next-token prediction is trained.
    pub positions: Vec<u32>,
    pub targets: Vec<u32>,
    /// First answer token per row, for accuracy.
    pub answers: Vec<u32>,
    /// Per image token (row-major, `rows x grid x grid`): the kind of the object that covers
    /// most of its cell, or [`NO_OBJECT_KIND`] (targets of the auxiliary loss, `train::aux`).
    pub cell_kinds: Vec<u32>,
    /// The same cells' colour index, or [`NO_OBJECT_COLOR`].
    pub cell_colors: Vec<u32>,
}

/// Cell target for "no object here": one past the last kind.
pub const NO_OBJECT_KIND: u32 = shapes::render::KINDS.len() as u32;
/// Cell target for "no object here": one past the last colour.
pub const NO_OBJECT_COLOR: u32 = shapes::render::COLORS.len() as u32;
/// A cell is labelled with an object only when the object covers this many of its pixels
/// (a small circle has about 130, so it labels every cell it really shows up in).
const MIN_CELL_PIXELS: usize = 12;

/// One unpadded row: ids, supervised (position, target) pairs, first answer token.
struct Row {
    ids: Vec<u32>,
    sup: Vec<(usize, u32)>,
    first: u32,
}

/// The answer's tokens as the prompt continues (` {answer}`, see prompt.rs): one token with
/// the default model's word-level tokenizer, often several with a byte-level BPE (MBQ
/// calibrates a converted SmolLM2 on these batches).
fn answer_tokens(tok: &VqaTokenizer, answer: &str) -> Result<Vec<u32>> {
    let ids = tok.encode(&format!(" {answer}"))?;
    if ids.is_empty() {
        return Err(Error::Train(format!("answer `{answer}` has no tokens")));
    }
    Ok(ids)
}

/// `turns == 0`: prompt only, supervising the first answer token at the prompt's last position
/// (validation). `turns >= 1`: sample `i` gets `1 + i % turns` question/answer turns, each
/// answer's tokens and its `<end_of_utterance>` supervised.
pub fn make_batch(
    vqa: &Vqa<CpuBackend>,
    split: Split,
    indices: impl Iterator<Item = u64>,
    turns: usize,
    draw: Draw,
) -> Result<Batch> {
    let tok: &VqaTokenizer = &vqa.tokenizer;
    let eou = tok.special.end_of_utterance;
    let side = vqa.model.cfg.vision_config.image_size;
    // Turns after the first start on a new line, a token in real tokenizers (see prompt.rs).
    let user = tok.encode("\nUser:")?;
    let assistant = tok.encode("\nAssistant:")?;
    let mut rows_ids: Vec<Row> = Vec::new();
    let mut pix = Vec::new();
    let grid = vqa.model.cfg.image_grid();
    let (mut cell_kinds, mut cell_colors) = (Vec::new(), Vec::new());
    for i in indices {
        let extra = if turns == 0 { 0 } else { (i as usize) % turns };
        let (s, more) = shapes::sample_with_followups(split, i, extra, draw);
        let p = vqa.prompt(&s.question.text)?;
        let answer = answer_tokens(tok, &s.question.answer)?;
        let first = answer[0];
        let mut ids = p.ids;
        let mut sup = vec![(ids.len() - 1, first)];
        if turns > 0 {
            for w in answer.windows(2) {
                ids.push(w[0]);
                sup.push((ids.len() - 1, w[1]));
            }
            ids.push(answer[answer.len() - 1]);
            sup.push((ids.len() - 1, eou));
            ids.push(eou);
            for q in more {
                ids.extend(&user);
                ids.extend(tok.encode(&q.text)?);
                ids.push(eou);
                ids.extend(&assistant);
                for a in answer_tokens(tok, &q.answer)? {
                    sup.push((ids.len() - 1, a));
                    ids.push(a);
                }
                sup.push((ids.len() - 1, eou));
                ids.push(eou);
            }
        }
        rows_ids.push(Row { ids, sup, first });
        pix.extend(image_to_pixels(&s.image, side)?.data);
        for owner in shapes::render::cell_owners(&s.scene, grid, MIN_CELL_PIXELS) {
            let o = owner.and_then(|i| s.scene.objects.get(i));
            cell_kinds.push(o.map_or(NO_OBJECT_KIND, |o| o.kind.index() as u32));
            cell_colors.push(o.map_or(NO_OBJECT_COLOR, |o| o.color as u32));
        }
    }
    let rows = rows_ids.len();
    let seq = rows_ids.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    if seq > vqa.model.cfg.text_config.max_position_embeddings {
        return Err(Error::Train(format!(
            "a {turns}-turn row of {seq} tokens exceeds the context"
        )));
    }
    let mut ids = Vec::with_capacity(rows * seq);
    let (mut positions, mut targets, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    for (r, row) in rows_ids.iter().enumerate() {
        ids.extend(&row.ids);
        ids.extend(std::iter::repeat_n(tok.special.pad, seq - row.ids.len()));
        for (pos, t) in &row.sup {
            positions.push((r * seq + pos) as u32);
            targets.push(*t);
        }
        answers.push(row.first);
    }
    let pixels = HostTensor::new(vec![rows, 3, side, side], pix)?;
    Ok(Batch {
        ids,
        rows,
        seq,
        pixels,
        positions,
        targets,
        answers,
        cell_kinds,
        cell_colors,
    })
}
