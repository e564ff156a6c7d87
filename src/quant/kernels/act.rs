//! Activations as the kernels read them: int8 per 32-value block with an f32 scale (Q8_0's
//! recipe), plus the f32 sum of each weight group.
//!
//! Why int8: a 4-bit GEMV that converts every level to f32 spends one FMA per 8 weights on top of
//! the unpacking and is compute-bound on one core well below DRAM bandwidth; `maddubs` multiplies
//! 32 levels by 32 int8 activations in one instruction. The price is one rounding of each
//! activation, at most `max|x_block| / 254`, the same as llama.cpp's and candle's Q8_0 paths.
//!
//! The group sums carry the zero point: per group `Σ_k x_k (q_k - z) s = s (Σ_k x_k q_k - z Σ_k x_k)`.
//! Both sums must see the same rounded `x̂`: then the result is exactly `Σ_k x̂_k w_k` and the
//! error `Σ_k (x̂_k - x_k) w_k` scales with the weights. With the exact `Σ x` instead, the error
//! would be `s Σ (x̂_k - x_k) q_k`, with levels that sit around 2^(bits-1) rather than around 0
//! (about 100x worse at 8 bits).

/// Values per activation block and per weight decode unit.
pub const BLOCK: usize = 32;

/// Where the level of weight `k` of a 32-value block lands in the vector a SIMD decoder builds;
/// the activations are stored in the same order so that lane `j` meets its own weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Lane `j` holds value `j` (scalar, 3-bit, 8-bit).
    Natural,
    /// 4-bit: lanes 0..16 the low nibbles of the 16 bytes (values 0, 2, .., 30), lanes 16..32 the
    /// high nibbles (values 1, 3, .., 31). Splitting a byte costs a shift and a mask.
    SplitNibbles,
    /// 2-bit: lanes `8e..8e+8` hold bit pair `e` of the 8 bytes (values `4i + e`).
    SplitPairs,
}

impl Order {
    /// Value index held by lane `j` of a block.
    pub fn source(self, j: usize) -> usize {
        match self {
            Order::Natural => j,
            Order::SplitNibbles if j < 16 => 2 * j,
            Order::SplitNibbles => 2 * (j - 16) + 1,
            Order::SplitPairs => 4 * (j % 8) + j / 8,
        }
    }
}

/// Quantized activations of `m` rows of length `k`, borrowed from a [`Scratch`].
#[derive(Debug, Clone, Copy)]
pub struct Acts<'a> {
    pub m: usize,
    pub k: usize,
    pub group: usize,
    /// `m * k` int8 values, each block in the kernel's [`Order`].
    pub xq: &'a [i8],
    /// `m * k / 32` block scales: `x ≈ xq * dx`.
    pub dx: &'a [f32],
    /// `m * k / group` sums of the rounded activations `xq * dx` over each weight group.
    pub gsum: &'a [f32],
}

impl Acts<'_> {
    pub fn blocks_per_row(&self) -> usize {
        self.k / BLOCK
    }

    pub fn groups_per_row(&self) -> usize {
        self.k / self.group
    }
}

/// Reusable buffers for [`Acts`]; `O(m * k)` bytes of int8 and `O(m * k / 32)` floats.
#[derive(Debug, Default)]
pub struct Scratch {
    xq: Vec<i8>,
    dx: Vec<f32>,
    gsum: Vec<f32>,
}

impl Scratch {
    /// Quantize `x` (`m * k`, row-major, `k` a multiple of `group` and of 32) into this scratch.
    pub fn quantize(
        &mut self,
        x: &[f32],
        m: usize,
        k: usize,
        group: usize,
        order: Order,
    ) -> Acts<'_> {
        let nb = k / BLOCK;
        let ng = k / group;
        self.xq.resize(m * k, 0);
        self.dx.resize(m * nb, 0.0);
        self.gsum.resize(m * ng, 0.0);
        let perm: [usize; BLOCK] = std::array::from_fn(|j| order.source(j));
        for ((xb, qb), d) in x
            .chunks_exact(BLOCK)
            .zip(self.xq.chunks_exact_mut(BLOCK))
            .zip(self.dx.iter_mut())
        {
            *d = quantize_block(xb, &perm, qb);
        }
        let bpg = group / BLOCK;
        for ((qg, dg), s) in self
            .xq
            .chunks_exact(group)
            .zip(self.dx.chunks_exact(bpg))
            .zip(self.gsum.iter_mut())
        {
            *s = qg
                .chunks_exact(BLOCK)
                .zip(dg)
                .map(|(qb, &d)| qb.iter().map(|&q| q as i32).sum::<i32>() as f32 * d)
                .sum();
        }
        Acts {
            m,
            k,
            group,
            xq: &self.xq[..m * k],
            dx: &self.dx[..m * nb],
            gsum: &self.gsum[..m * ng],
        }
    }
}

/// Symmetric int8 of one block in `perm` order; returns the scale. A non-finite activation makes
/// the scale NaN so that it reaches the output as it would through an f32 matmul.
fn quantize_block(xb: &[f32], perm: &[usize; BLOCK], out: &mut [i8]) -> f32 {
    // |x| as bits orders like |x| for finite values and puts inf and NaN above all of them; an
    // integer max vectorises where `f32::max` (NaN rules) does not.
    let bits = xb
        .iter()
        .fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    if bits >= 0x7f80_0000 {
        out.fill(0);
        return f32::NAN;
    }
    let amax = f32::from_bits(bits);
    if amax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / amax;
    let mut q = [0i8; BLOCK];
    for (q, &v) in q.iter_mut().zip(xb) {
        // Half away from zero; `f32::round` is a libm call on baseline x86-64. `|v| <= 127`, and
        // `as` saturates.
        let v = v * inv;
        *q = (v + 0.5f32.copysign(v)) as i8;
    }
    for (o, &src) in out.iter_mut().zip(perm) {
        *o = q[src];
    }
    amax / 127.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations() {
        for o in [Order::Natural, Order::SplitNibbles, Order::SplitPairs] {
            let mut seen = [false; BLOCK];
            for j in 0..BLOCK {
                seen[o.source(j)] = true;
            }
            assert!(seen.iter().all(|&s| s), "{o:?}");
        }
    }

    #[test]
    fn a_block_comes_back_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let mut s = Scratch::default();
        let a = s.quantize(&x, 1, 64, 32, Order::SplitNibbles);
        for b in 0..2 {
            for j in 0..BLOCK {
                let src = b * BLOCK + Order::SplitNibbles.source(j);
                let back = a.xq[b * BLOCK + j] as f32 * a.dx[b];
                assert!((back - x[src]).abs() <= a.dx[b] * 0.5 + 1e-6);
            }
        }
        let rounded: f32 = a.xq[..32].iter().map(|&q| q as f32 * a.dx[0]).sum();
        assert!((a.gsum[0] - rounded).abs() < 1e-5);
    }
}
