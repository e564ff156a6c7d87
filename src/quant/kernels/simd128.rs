//! wasm32 simd128 kernels (compiled in with `-C target-feature=+simd128`), single-threaded.
//!
//! simd128 has no u8 x i8 multiply-add; levels and activations are widened to i16 and reduced
//! with `i32x4.dot_i16x8_s`. The decoders build the same lane orders as the AVX2 ones, so the
//! activation layout is shared. 8-bit levels need no offset here: 255 fits an i16.

use std::arch::wasm32::*;
use std::ops::Range;

use super::act::{Acts, Order, BLOCK};
use super::{ChunkFn, OutCols};
use crate::quant::packed::PackedTensor;

/// Rows of `x` that share one decoded weight block.
const X_TILE: usize = 4;

pub(super) fn select(bits: u32) -> Option<(ChunkFn, Order)> {
    match bits {
        8 => Some((chunk::<8> as ChunkFn, Order::Natural)),
        4 => Some((chunk::<4> as ChunkFn, Order::SplitNibbles)),
        3 => Some((chunk::<3> as ChunkFn, Order::Natural)),
        2 => Some((chunk::<2> as ChunkFn, Order::SplitPairs)),
        _ => None,
    }
}

fn chunk<const BITS: u32>(w: &PackedTensor, a: &Acts, rows: Range<usize>, out: &mut OutCols) {
    for n in rows {
        let mut mi = 0;
        while mi < a.m {
            let mt = X_TILE.min(a.m - mi);
            let r = tile::<BITS>(w, a, n, mi, mt);
            for (i, &v) in r[..mt].iter().enumerate() {
                out.set(mi + i, n, v);
            }
            mi += mt;
        }
    }
}

/// Outputs `[n][m0 + i]` for `i < mt <= X_TILE`.
#[inline]
// `i` indexes the accumulators, the corrections and the rows of `x` together.
#[allow(clippy::needless_range_loop)]
fn tile<const BITS: u32>(
    w: &PackedTensor,
    a: &Acts,
    n: usize,
    m0: usize,
    mt: usize,
) -> [f32; X_TILE] {
    let wpr = w.words_per_row();
    let gpr = w.groups_per_row();
    let bpg = w.spec.group / BLOCK;
    let nb = a.blocks_per_row();
    let row = &w.words[n * wpr..(n + 1) * wpr];
    let mut acc = [f32x4_splat(0.0); X_TILE];
    let mut corr = [0f32; X_TILE];
    for g in 0..gpr {
        let mut accg = [f32x4_splat(0.0); X_TILE];
        for b in g * bpg..(g + 1) * bpg {
            let (qa, qb) = decode::<BITS>(&row[b * BITS as usize..(b + 1) * BITS as usize]);
            for i in 0..mt {
                let xb = &a.xq[(m0 + i) * a.k + b * BLOCK..][..BLOCK];
                // SAFETY: `xb` is 32 bytes, two unaligned 16-byte loads.
                let (xa, xc) = unsafe {
                    (
                        v128_load(xb.as_ptr() as *const v128),
                        v128_load(xb.as_ptr().add(16) as *const v128),
                    )
                };
                let s = i32x4_add(dot16(qa, xa), dot16(qb, xc));
                let d = f32x4_splat(a.dx[(m0 + i) * nb + b]);
                accg[i] = f32x4_add(accg[i], f32x4_mul(f32x4_convert_i32x4(s), d));
            }
        }
        let s = w.scales[n * gpr + g].to_f32();
        let sz = s * w.zeros[n * gpr + g].to_f32();
        for i in 0..mt {
            acc[i] = f32x4_add(acc[i], f32x4_mul(accg[i], f32x4_splat(s)));
            corr[i] += sz * a.gsum[(m0 + i) * gpr + g];
        }
    }
    let mut res = [0f32; X_TILE];
    for i in 0..mt {
        let v = acc[i];
        res[i] = f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
            - corr[i];
    }
    res
}

/// 16 u8 levels times 16 i8 activations, as four i32 partial sums.
#[inline]
fn dot16(q: v128, x: v128) -> v128 {
    let lo = i32x4_dot_i16x8(u16x8_extend_low_u8x16(q), i16x8_extend_low_i8x16(x));
    let hi = i32x4_dot_i16x8(u16x8_extend_high_u8x16(q), i16x8_extend_high_i8x16(x));
    i32x4_add(lo, hi)
}

/// The block's 32 levels as two vectors of 16 bytes, in the order `select` names for `BITS`.
#[inline]
fn decode<const BITS: u32>(words: &[u32]) -> (v128, v128) {
    match BITS {
        8 => {
            // SAFETY: `words` is the block's 8 words, 32 bytes.
            unsafe {
                (
                    v128_load(words.as_ptr() as *const v128),
                    v128_load(words.as_ptr().add(4) as *const v128),
                )
            }
        }
        4 => {
            // SAFETY: `words` is the block's 4 words, 16 bytes.
            let v = unsafe { v128_load(words.as_ptr() as *const v128) };
            (v128_and(v, u8x16_splat(0x0F)), u8x16_shr(v, 4))
        }
        2 => {
            let w = words[0] as u64 | (words[1] as u64) << 32;
            let m = u8x16_splat(0x03);
            (
                v128_and(u64x2(w, w >> 2), m),
                v128_and(u64x2(w >> 4, w >> 6), m),
            )
        }
        _ => {
            // 3-bit values straddle words; no shuffle buys much over shifting a u128 here.
            let bits = words[0] as u128 | (words[1] as u128) << 32 | (words[2] as u128) << 64;
            let mut q = [0u8; BLOCK];
            for (j, v) in q.iter_mut().enumerate() {
                *v = ((bits >> (3 * j)) & 7) as u8;
            }
            // SAFETY: `q` is 32 bytes.
            unsafe {
                (
                    v128_load(q.as_ptr() as *const v128),
                    v128_load(q.as_ptr().add(16) as *const v128),
                )
            }
        }
    }
}
