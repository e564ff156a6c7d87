//! Turning shapes samples into padded training batches.

use crate::backend::cpu::CpuBackend;
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::eval::shapes::{self, Split};
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
    /// Answer token per row (single-word answers), for accuracy.
    pub answers: Vec<u32>,
}

/// `with_answer`: append ` {answer}<end_of_utterance>` and supervise both tokens (training);
/// otherwise supervise only the first answer token at the prompt's last position (validation).
pub fn make_batch(
    vqa: &Vqa<CpuBackend>,
    split: Split,
    indices: impl Iterator<Item = u64>,
    with_answer: bool,
) -> Result<Batch> {
    let tok: &VqaTokenizer = &vqa.tokenizer;
    let side = vqa.model.cfg.vision_config.image_size;
    let mut seqs: Vec<(Vec<u32>, usize, u32)> = Vec::new();
    let mut pix = Vec::new();
    for i in indices {
        let s = shapes::sample(split, i);
        let p = vqa.prompt(&s.question.text)?;
        let ans = tok.encode(&s.question.answer)?;
        let [a] = ans.as_slice() else {
            return Err(Error::Train(format!(
                "answer `{}` is not one token",
                s.question.answer
            )));
        };
        let plen = p.ids.len();
        let mut ids = p.ids;
        if with_answer {
            ids.push(*a);
            ids.push(tok.special.end_of_utterance);
        }
        seqs.push((ids, plen, *a));
        pix.extend(image_to_pixels(&s.image, side)?.data);
    }
    let rows = seqs.len();
    let seq = seqs.iter().map(|s| s.0.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows * seq);
    let (mut positions, mut targets, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    for (r, (row, plen, a)) in seqs.iter().enumerate() {
        ids.extend(row);
        ids.extend(std::iter::repeat_n(tok.special.pad, seq - row.len()));
        let base = (r * seq) as u32;
        positions.push(base + *plen as u32 - 1);
        targets.push(*a);
        if with_answer {
            positions.push(base + *plen as u32);
            targets.push(tok.special.end_of_utterance);
        }
        answers.push(*a);
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
    })
}
