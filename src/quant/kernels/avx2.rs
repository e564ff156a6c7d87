//! x86-64 kernels on AVX2 + FMA + F16C, chosen at run time.
//!
//! Every width decodes a 32-value block into 32 bytes of levels with two to seven instructions
//! (4-bit: two blocks per 32-byte load) and multiplies it by 32 int8 activations with `maddubs`
//! (u8 x i8 pairs summed to i16, then to i32 by `madd`). Levels below 8 bits are at most 15, so a pair sum stays under
//! 2 * 15 * 127 and never saturates. 8-bit levels are stored as `q - 128` (an i8) and multiplied
//! as `|q - 128| * sign(x, q - 128)`, at most 2 * 128 * 127 = 32512 per pair; the 128 moves into
//! the zero point.

use std::arch::x86_64::*;
use std::ops::Range;

use super::act::{Acts, Order, BLOCK};
use super::{ChunkFn, OutCols};
use crate::quant::packed::PackedTensor;

/// The AVX2 kernel for `bits` and the activation order it reads, if this CPU has AVX2, FMA and
/// F16C.
pub(super) fn select(bits: u32) -> Option<(ChunkFn, Order)> {
    if !(is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c"))
    {
        return None;
    }
    match bits {
        8 => Some((chunk8 as ChunkFn, Order::Natural)),
        4 => Some((chunk4 as ChunkFn, Order::SplitNibbles)),
        3 => Some((chunk3 as ChunkFn, Order::Natural)),
        2 => Some((chunk2 as ChunkFn, Order::SplitPairs)),
        _ => None,
    }
}

macro_rules! chunk_for {
    ($name:ident, $bits:literal) => {
        fn $name(w: &PackedTensor, a: &Acts, rows: Range<usize>, out: &mut OutCols) {
            // SAFETY: only handed out by `select`, after it found AVX2, FMA and F16C.
            unsafe { chunk::<$bits>(w, a, rows, out) }
        }
    };
}
chunk_for!(chunk8, 8);
chunk_for!(chunk4, 4);
chunk_for!(chunk3, 3);
chunk_for!(chunk2, 2);

/// Shape facts of one call, computed once per task rather than once per tile.
struct Geo {
    /// Words per weight row.
    wpr: usize,
    /// Groups per row.
    gpr: usize,
    /// 32-value blocks per group (1, 2 or 4).
    bpg: usize,
    /// Blocks per row.
    nb: usize,
    /// `permutevar8x32` indices spreading 8 group scales over `8 * bpg` blocks: entry `h` gives
    /// blocks `8h..8h + 8` their group's lane.
    spread: [__m256i; 4],
}

/// [`Geo::spread`] for 1, 2 and 4 blocks per group.
const SPREAD: [[[i32; 8]; 4]; 3] = {
    let mut t = [[[0i32; 8]; 4]; 3];
    let mut c = 0;
    while c < 3 {
        let bpg = 1 << c;
        let mut h = 0;
        while h < 4 {
            let mut j = 0;
            while j < 8 {
                let g = (h * 8 + j) / bpg;
                t[c][h][j] = if g < 8 { g as i32 } else { 7 };
                j += 1;
            }
            h += 1;
        }
        c += 1;
    }
    t
};

impl Geo {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn new(w: &PackedTensor) -> Self {
        let bpg = w.spec.group / BLOCK;
        let table = &SPREAD[bpg.trailing_zeros().min(2) as usize];
        let mut spread = [_mm256_setzero_si256(); 4];
        for (v, idx) in spread.iter_mut().zip(table) {
            // SAFETY: `idx` is 32 bytes.
            *v = unsafe { _mm256_loadu_si256(idx.as_ptr() as *const __m256i) };
        }
        Self {
            wpr: w.words_per_row(),
            gpr: w.groups_per_row(),
            bpg,
            nb: w.cols / BLOCK,
            spread,
        }
    }
}

/// Per (weight row, x row) of a tile, the f32 multiplier `dx_block * scale_group` of each of the
/// up to 32 blocks of eight groups, and for 4-bit the same as pair vectors
/// `[m_2p x4 | m_2p+1 x4]`. Lives for a whole task so tiles do not zero 2 KiB each.
struct Mults<const RW: usize, const MX: usize> {
    one: [[[f32; 32]; MX]; RW],
    two: [[[__m256; 16]; MX]; RW],
}

impl<const RW: usize, const MX: usize> Mults<RW, MX> {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn new() -> Self {
        Self {
            one: [[[0.0; 32]; MX]; RW],
            two: [[[_mm256_setzero_ps(); 16]; MX]; RW],
        }
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must be validated and `a` built for it in the
/// order `select` gave for `BITS`; `rows` within `w.rows`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk<const BITS: u32>(
    w: &PackedTensor,
    a: &Acts,
    rows: Range<usize>,
    out: &mut OutCols,
) {
    debug_assert!(rows.end <= w.rows && a.k == w.cols && a.group == w.spec.group);
    let geo = Geo::new(w);
    if a.m == 1 {
        // Four weight rows at once: four independent FMA chains hide the FMA latency, and the
        // activation block is loaded once for all four.
        let (mut m4, mut m1) = (Mults::new(), Mults::new());
        let mut n = rows.start;
        while n + 4 <= rows.end {
            let r = unsafe { tile::<BITS, 4, 1>(w, a, &geo, &mut m4, n, 0) };
            for (i, v) in r.iter().enumerate() {
                out.set(0, n + i, v[0]);
            }
            n += 4;
        }
        for n in n..rows.end {
            let r = unsafe { tile::<BITS, 1, 1>(w, a, &geo, &mut m1, n, 0) };
            out.set(0, n, r[0][0]);
        }
        return;
    }
    // Prefill: each weight block is decoded once per four rows of x; the weight row (a few KiB)
    // stays in L1 while the row tiles pass over it.
    let (mut m4, mut m1) = (Mults::new(), Mults::new());
    for n in rows {
        let mut mi = 0;
        while mi + 4 <= a.m {
            let r = unsafe { tile::<BITS, 1, 4>(w, a, &geo, &mut m4, n, mi) };
            for (i, &v) in r[0].iter().enumerate() {
                out.set(mi + i, n, v);
            }
            mi += 4;
        }
        for mi in mi..a.m {
            let r = unsafe { tile::<BITS, 1, 1>(w, a, &geo, &mut m1, n, mi) };
            out.set(mi, n, r[0][0]);
        }
    }
}

/// Outputs `[n0 + r][m0 + i]` for `r < RW`, `i < MX`.
///
/// Groups are taken eight at a time. For those, each (weight row, x row) pair gets one f32
/// multiplier per block, `dx_block * scale_group`, computed eight lanes at once; the block loop
/// is then decode, `maddubs`, `madd`, convert and one FMA into a single accumulator. The zero
/// points go into a second accumulator as `scale * zero * group_sum`, also eight groups at once.
///
/// # Safety
/// As [`chunk`], with `n0 + RW <= w.rows` and `m0 + MX <= a.m`.
// The (row, x row, block) indices address several register arrays at once; iterators over one
// of them would hide which is which.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const BITS: u32, const RW: usize, const MX: usize>(
    w: &PackedTensor,
    a: &Acts,
    geo: &Geo,
    mults: &mut Mults<RW, MX>,
    n0: usize,
    m0: usize,
) -> [[f32; MX]; RW] {
    let Geo {
        wpr, gpr, bpg, nb, ..
    } = *geo;
    // Blocks per 64-byte cache line, rounded down so no line is skipped.
    const { assert!(BITS >= 2 && BITS <= 8) };
    let blocks_per_line = 16 / BITS as usize;
    // 8-bit levels arrive as q - 128; the zero point takes the 128 back.
    let zshift = _mm256_set1_ps(if BITS == 8 { 128.0 } else { 0.0 });
    let words_end = w.words.len();
    // SAFETY (pointer arithmetic below): `w` is validated, so row `n` spans words
    // `[n * wpr, (n + 1) * wpr)` and scales/zeros `[n * gpr, (n + 1) * gpr)`; `a` has `m` rows of
    // `k = 32 * nb` int8 values, `nb` block scales and `gpr` group sums; `n0 + RW <= rows` and
    // `m0 + MX <= m`.
    let mut wrow = [0usize; RW];
    let mut sp = [std::ptr::null::<u16>(); RW];
    let mut zp = [std::ptr::null::<u16>(); RW];
    for r in 0..RW {
        wrow[r] = (n0 + r) * wpr;
        sp[r] = unsafe { (w.scales.as_ptr() as *const u16).add((n0 + r) * gpr) };
        zp[r] = unsafe { (w.zeros.as_ptr() as *const u16).add((n0 + r) * gpr) };
    }
    let mut xp = [std::ptr::null::<i8>(); MX];
    let mut dxp = [std::ptr::null::<f32>(); MX];
    let mut gsp = [std::ptr::null::<f32>(); MX];
    for i in 0..MX {
        xp[i] = unsafe { a.xq.as_ptr().add((m0 + i) * a.k) };
        dxp[i] = unsafe { a.dx.as_ptr().add((m0 + i) * nb) };
        gsp[i] = unsafe { a.gsum.as_ptr().add((m0 + i) * gpr) };
    }

    let mut acc = [[_mm256_setzero_ps(); MX]; RW];
    let mut corr = [[_mm256_setzero_ps(); MX]; RW];
    let Mults {
        one: mult,
        two: mult2,
    } = mults;
    let pair_idx = [
        _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
        _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
        _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5),
        _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7),
    ];
    let mut g0 = 0;
    while g0 < gpr {
        let ng = (gpr - g0).min(8);
        let (b0, nblk) = (g0 * bpg, ng * bpg);
        let mut dx8 = [[_mm256_setzero_ps(); 4]; MX];
        let mut gs8 = [_mm256_setzero_ps(); MX];
        for i in 0..MX {
            for (h, d) in dx8[i].iter_mut().enumerate().take(bpg) {
                let from = (h * 8).min(nblk);
                *d = unsafe { load8_f32(dxp[i].add(b0 + from), (nblk - from).min(8)) };
            }
            gs8[i] = unsafe { load8_f32(gsp[i].add(g0), ng) };
        }
        for r in 0..RW {
            let s8 = unsafe { load8_f16(sp[r].add(g0), ng) };
            let z8 = unsafe { load8_f16(zp[r].add(g0), ng) };
            let sz = _mm256_mul_ps(s8, _mm256_sub_ps(z8, zshift));
            for i in 0..MX {
                corr[r][i] = _mm256_fmadd_ps(sz, gs8[i], corr[r][i]);
            }
            // Only the `nblk` blocks (`nblk / 2` pairs) of these groups: a short row has few.
            for h in 0..nblk.div_ceil(8) {
                let s = _mm256_permutevar8x32_ps(s8, geo.spread[h]);
                for i in 0..MX {
                    let m = _mm256_mul_ps(dx8[i][h], s);
                    // SAFETY: `h < nblk / 8 <= 4`, so lanes `8h..8h + 8` lie in the 32.
                    unsafe { _mm256_storeu_ps(mult[r][i].as_mut_ptr().add(h * 8), m) };
                    if BITS == 4 {
                        let pairs = (nblk / 2 - h * 4).min(4);
                        for (j, idx) in pair_idx.iter().enumerate().take(pairs) {
                            mult2[r][i][h * 4 + j] = _mm256_permutevar8x32_ps(m, *idx);
                        }
                    }
                }
            }
        }
        let mut bb = 0;
        if BITS == 4 {
            // Two 4-bit blocks are one 32-byte load, split into low and high nibbles with three
            // instructions, and their two `maddubs` results add in i16 (at most 2 * 3810) before
            // a single `madd`: 4.5 vector instructions per block instead of 6, and 2 on the
            // multiply ports instead of 3. The i32 lanes 0..4 belong to the first block and
            // 4..8 to the second, hence the pair multipliers `mult2`.
            let nib = _mm256_set1_epi8(0x0F);
            while bb + 2 <= nblk {
                let b = b0 + bb;
                // Each block's activations are [even values | odd values]; regroup the pair as
                // [block 0 even | block 1 even] and [block 0 odd | block 1 odd].
                let mut xe = [_mm256_setzero_si256(); MX];
                let mut xo = [_mm256_setzero_si256(); MX];
                for i in 0..MX {
                    // SAFETY: blocks `b` and `b + 1` lie in the row of `a.k` bytes.
                    let (x0, x1) = unsafe {
                        (
                            _mm256_loadu_si256(xp[i].add(b * BLOCK) as *const __m256i),
                            _mm256_loadu_si256(xp[i].add((b + 1) * BLOCK) as *const __m256i),
                        )
                    };
                    xe[i] = _mm256_permute2x128_si256(x0, x1, 0x20);
                    xo[i] = _mm256_permute2x128_si256(x0, x1, 0x31);
                }
                for r in 0..RW {
                    let at = wrow[r] + b * 4;
                    let p = unsafe { w.words.as_ptr().add(at) };
                    if b % blocks_per_line == 0 {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(RW * wpr) as *const i8);
                    }
                    // SAFETY: blocks `b` and `b + 1` of the row are eight words.
                    let v = unsafe { _mm256_loadu_si256(p as *const __m256i) };
                    let lo = _mm256_and_si256(v, nib);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
                    for i in 0..MX {
                        let s16 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, xe[i]),
                            _mm256_maddubs_epi16(hi, xo[i]),
                        );
                        let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
                        acc[r][i] = _mm256_fmadd_ps(p, mult2[r][i][bb / 2], acc[r][i]);
                    }
                }
                bb += 2;
            }
        }
        for bb in bb..nblk {
            let b = b0 + bb;
            let mut q = [_mm256_setzero_si256(); RW];
            for r in 0..RW {
                let at = wrow[r] + b * BITS as usize;
                let p = unsafe { w.words.as_ptr().add(at) };
                if b % blocks_per_line == 0 {
                    // Rows are a few KiB: too short for the hardware prefetcher to ramp up on
                    // each of the RW interleaved streams before it ends. Fetch the same spot of
                    // the next tile's rows, RW rows on (a prefetch past the end never faults).
                    let ahead = p.wrapping_add(RW * wpr) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                }
                q[r] = unsafe { decode::<BITS>(p, words_end - at) };
            }
            for i in 0..MX {
                let xv = unsafe { _mm256_loadu_si256(xp[i].add(b * BLOCK) as *const __m256i) };
                for r in 0..RW {
                    let p = _mm256_cvtepi32_ps(dot::<BITS>(q[r], xv));
                    let m = _mm256_set1_ps(mult[r][i][bb]);
                    acc[r][i] = _mm256_fmadd_ps(p, m, acc[r][i]);
                }
            }
        }
        g0 += ng;
    }
    let mut res = [[0f32; MX]; RW];
    for r in 0..RW {
        for i in 0..MX {
            res[r][i] = hsum(_mm256_sub_ps(acc[r][i], corr[r][i]));
        }
    }
    res
}

/// `n <= 8` floats from `p`, zero-padded. Tails use a masked load (masked lanes never fault)
/// rather than a copy, which LLVM turns into a `memcpy` call and a `vzeroupper`.
///
/// # Safety
/// `p` must be readable for `n` floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_f32(p: *const f32, n: usize) -> __m256 {
    if n >= 8 {
        return unsafe { _mm256_loadu_ps(p) };
    }
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    unsafe { _mm256_maskload_ps(p, mask) }
}

/// `n <= 8` f16 values from `p` as f32, zero-padded.
///
/// # Safety
/// `p` must be readable for `n` halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8_f16(p: *const u16, n: usize) -> __m256 {
    if n >= 8 {
        return _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) });
    }
    // No 16-bit masked load: insert the lanes one by one (a tail happens once per row per call).
    let mut v = _mm_setzero_si128();
    macro_rules! lane {
        ($j:literal) => {
            if n > $j {
                v = _mm_insert_epi16::<$j>(v, unsafe { *p.add($j) } as i32);
            }
        };
    }
    lane!(0);
    lane!(1);
    lane!(2);
    lane!(3);
    lane!(4);
    lane!(5);
    lane!(6);
    _mm256_cvtph_ps(v)
}

/// Levels of the block at `p` as 32 bytes in the order `select` names for `BITS`.
///
/// # Safety
/// `p` must be readable for `avail >= BITS` words.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode<const BITS: u32>(p: *const u32, avail: usize) -> __m256i {
    debug_assert!(avail >= BITS as usize);
    // SAFETY (all arms): each reads the block's own `BITS` words, except 3-bit which reads one
    // more word only when `avail` says it is there.
    match BITS {
        8 => {
            let v = unsafe { _mm256_loadu_si256(p as *const __m256i) };
            _mm256_xor_si256(v, _mm256_set1_epi8(i8::MIN))
        }
        4 => {
            // Both 128-bit halves hold the 16 bytes; the upper half is shifted by a nibble.
            let v = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p as *const __m128i) });
            let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
            _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
        }
        2 => {
            let v = _mm256_set1_epi64x(unsafe { (p as *const i64).read_unaligned() });
            let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 2, 4, 6));
            _mm256_and_si256(v, _mm256_set1_epi8(0x03))
        }
        _ => unsafe { decode3(p, avail) },
    }
}

/// `pshufb` masks gathering, for each 3-bit value, the two bytes that hold it: value `i` of a
/// 24-bit triple starts at bit `3i`, in byte `3i / 8` at shift `3i % 8`.
const fn triple_mask(t_lo: usize, t_hi: usize) -> [i8; 32] {
    let mut m = [0i8; 32];
    let mut lane = 0;
    while lane < 2 {
        let t = if lane == 0 { t_lo } else { t_hi };
        let mut i = 0;
        while i < 8 {
            let byte = 3 * t + 3 * i / 8;
            m[lane * 16 + 2 * i] = byte as i8;
            m[lane * 16 + 2 * i + 1] = (byte + 1) as i8;
            i += 1;
        }
        lane += 1;
    }
    m
}

/// Values 0..8 | 16..24 and 8..16 | 24..32: `packus` of the two yields the natural order.
const MASK3_A: [i8; 32] = triple_mask(0, 2);
const MASK3_B: [i8; 32] = triple_mask(1, 3);
/// `2^(13 - 3i % 8)`: moves value `i` to bits 13..16 of its 16-bit lane (AVX2 has no per-lane
/// 16-bit shift, a multiply is one).
const MUL3: [i16; 16] = [
    8192, 1024, 128, 4096, 512, 64, 2048, 256, 8192, 1024, 128, 4096, 512, 64, 2048, 256,
];

/// # Safety
/// `p` must be readable for `avail >= 3` words.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode3(p: *const u32, avail: usize) -> __m256i {
    // The 12 bytes are loaded as 16; the last block of the tensor has no 4th word to spare.
    let mut tail = [0u32; 4];
    let src = if avail >= 4 {
        p
    } else {
        for (j, t) in tail.iter_mut().enumerate().take(3) {
            *t = unsafe { *p.add(j) };
        }
        tail.as_ptr()
    };
    // SAFETY: `src` is readable for four words; the masks and multipliers are 32-byte arrays.
    unsafe {
        let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(src as *const __m128i));
        let mul = _mm256_loadu_si256(MUL3.as_ptr() as *const __m256i);
        let lo = _mm256_shuffle_epi8(v, _mm256_loadu_si256(MASK3_A.as_ptr() as *const __m256i));
        let hi = _mm256_shuffle_epi8(v, _mm256_loadu_si256(MASK3_B.as_ptr() as *const __m256i));
        let lo = _mm256_srli_epi16(_mm256_mullo_epi16(lo, mul), 13);
        let hi = _mm256_srli_epi16(_mm256_mullo_epi16(hi, mul), 13);
        _mm256_packus_epi16(lo, hi)
    }
}

/// Eight i32 partial sums of levels times activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot<const BITS: u32>(q: __m256i, x: __m256i) -> __m256i {
    let pairs = if BITS == 8 {
        _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(x, q))
    } else {
        _mm256_maddubs_epi16(q, x)
    };
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
