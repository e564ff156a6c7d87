//! Putting image features into a prompt's token embeddings: every architecture marks where an
//! image goes with runs of one placeholder token and replaces those rows with the vision
//! tower's output, in order. Shared so that both families splice the same way.

use std::ops::Range;

use crate::backend::Backend;
use crate::error::Result;

/// `emb [bs, s, d]` with the positions in `runs` (the same in every row, ascending, disjoint)
/// replaced, run after run, by consecutive rows of `feats [bs, Σ run lengths, d]`.
pub fn splice<B: Backend>(
    b: &B,
    emb: &B::Tensor,
    feats: &B::Tensor,
    runs: &[Range<usize>],
) -> Result<B::Tensor> {
    let s = b.shape(emb).get(1).copied().unwrap_or(0);
    let mut parts = Vec::with_capacity(2 * runs.len() + 1);
    let (mut pos, mut fpos) = (0, 0);
    for r in runs {
        if r.start > pos {
            parts.push(b.narrow(emb, 1, pos, r.start - pos)?);
        }
        parts.push(b.narrow(feats, 1, fpos, r.len())?);
        fpos += r.len();
        pos = r.end;
    }
    if pos < s {
        parts.push(b.narrow(emb, 1, pos, s - pos)?);
    }
    let refs: Vec<&B::Tensor> = parts.iter().collect();
    b.cat(&refs, 1)
}
