//! Portable kernel and reference: the SIMD kernels' arithmetic (int8 activations, exact integer
//! dot product per 32-value block, per-group scale and zero) written one value at a time.

use std::ops::Range;

use super::act::{Acts, BLOCK};
use super::OutCols;
use crate::quant::packed::{unpack_levels, PackedTensor};

/// Rows of `x` that share one decoded weight block.
const X_TILE: usize = 8;

pub(super) fn chunk(w: &PackedTensor, a: &Acts, rows: Range<usize>, out: &mut OutCols) {
    let bits = w.spec.bits as usize;
    let wpr = w.words_per_row();
    let gpr = w.groups_per_row();
    let bpg = w.spec.group / BLOCK;
    let nb = a.blocks_per_row();
    let mut q = [0u8; BLOCK];
    for n in rows {
        let words = &w.words[n * wpr..(n + 1) * wpr];
        let (scales, zeros) = (&w.scales[n * gpr..][..gpr], &w.zeros[n * gpr..][..gpr]);
        for m0 in (0..a.m).step_by(X_TILE) {
            let mt = X_TILE.min(a.m - m0);
            let mut acc = [0f32; X_TILE];
            for g in 0..gpr {
                let mut accg = [0f32; X_TILE];
                for b in g * bpg..(g + 1) * bpg {
                    unpack_levels(&words[b * bits..(b + 1) * bits], bits as u32, &mut q);
                    for (i, ag) in accg[..mt].iter_mut().enumerate() {
                        let mi = m0 + i;
                        let xq = &a.xq[mi * a.k + b * BLOCK..][..BLOCK];
                        let dot: i32 = q.iter().zip(xq).map(|(&q, &x)| q as i32 * x as i32).sum();
                        *ag += dot as f32 * a.dx[mi * nb + b];
                    }
                }
                let (s, z) = (scales[g].to_f32(), zeros[g].to_f32());
                for (i, (ac, ag)) in acc[..mt].iter_mut().zip(&accg).enumerate() {
                    *ac += s * (ag - z * a.gsum[(m0 + i) * gpr + g]);
                }
            }
            for (i, &v) in acc[..mt].iter().enumerate() {
                out.set(m0 + i, n, v);
            }
        }
    }
}
