//! The packed int-N weight layout shared by the CPU kernels, the WGSL kernels and the package
//! format.
//!
//! A `[out, in]` weight is stored as three arrays:
//! - `words`: per output row, the row's levels as one little-endian bit stream of `u32` words
//!   (value `i` starts at bit `i * bits`). 3-bit values may straddle two words; 32 values of any
//!   width fill exactly `bits` words, so a 32-value block is the kernels' unit of decoding.
//! - `scales` and `zeros`: per output row and group, f16. A weight is `(q - zero) * scale`, with
//!   `zero` a real number in level units (HQQ moves it off the integer grid).

use half::f16;

use super::spec::{Method, QuantSpec};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct PackedTensor {
    pub spec: QuantSpec,
    pub method: Method,
    /// Rows, N (PyTorch `out_features`).
    pub rows: usize,
    /// Input dimension, K, a multiple of `spec.group`.
    pub cols: usize,
    /// `rows * spec.words_per_row(cols)` words.
    pub words: Vec<u32>,
    /// `rows * cols / group`, row-major.
    pub scales: Vec<f16>,
    /// `rows * cols / group`, row-major.
    pub zeros: Vec<f16>,
}

/// Write `levels` (each `< 2^bits`) into `out` as a little-endian bit stream.
pub fn pack_levels(levels: &[u8], bits: u32, out: &mut [u32]) {
    out.fill(0);
    let b = bits as usize;
    for (i, &q) in levels.iter().enumerate() {
        let bit = i * b;
        let (w, s) = (bit / 32, bit % 32);
        let v = q as u32 & ((1u32 << bits) - 1);
        out[w] |= v << s;
        if s + b > 32 {
            out[w + 1] |= v >> (32 - s);
        }
    }
}

/// Read `out.len()` levels back from a bit stream written by [`pack_levels`].
pub fn unpack_levels(words: &[u32], bits: u32, out: &mut [u8]) {
    let b = bits as usize;
    let mask = (1u64 << bits) - 1;
    for (i, q) in out.iter_mut().enumerate() {
        let bit = i * b;
        let (w, s) = (bit / 32, bit % 32);
        let lo = words[w] as u64;
        let hi = if s + b > 32 { words[w + 1] as u64 } else { 0 };
        *q = (((lo | (hi << 32)) >> s) & mask) as u8;
    }
}

impl PackedTensor {
    /// Pack per-element levels `[rows, cols]` with their per-group scales and zeros.
    pub fn from_levels(
        spec: QuantSpec,
        method: Method,
        rows: usize,
        cols: usize,
        levels: &[u8],
        scales: Vec<f16>,
        zeros: Vec<f16>,
    ) -> Result<Self> {
        spec.validate()?;
        spec.check_k("packed tensor", cols)?;
        let groups = rows * cols / spec.group;
        if levels.len() != rows * cols || scales.len() != groups || zeros.len() != groups {
            return Err(Error::Invalid(format!(
                "packed tensor [{rows}, {cols}]: got {} levels, {} scales, {} zeros; \
                 expected {}, {groups}, {groups}",
                levels.len(),
                scales.len(),
                zeros.len(),
                rows * cols
            )));
        }
        let wpr = spec.words_per_row(cols);
        let mut words = vec![0u32; rows * wpr];
        for (r, out) in words.chunks_exact_mut(wpr.max(1)).enumerate().take(rows) {
            pack_levels(&levels[r * cols..(r + 1) * cols], spec.bits, out);
        }
        Ok(Self {
            spec,
            method,
            rows,
            cols,
            words,
            scales,
            zeros,
        })
    }

    /// Check the arrays against the declared shape (used on anything read from outside).
    pub fn validate(&self) -> Result<()> {
        self.spec.validate()?;
        self.spec.check_k("packed tensor", self.cols)?;
        let groups = self.rows * self.cols / self.spec.group;
        let words = self.rows * self.spec.words_per_row(self.cols);
        if self.words.len() != words || self.scales.len() != groups || self.zeros.len() != groups {
            return Err(Error::Invalid(format!(
                "packed tensor [{}, {}] at {} bits, group {}: has {} words, {} scales, {} zeros; \
                 expected {words}, {groups}, {groups}",
                self.rows,
                self.cols,
                self.spec.bits,
                self.spec.group,
                self.words.len(),
                self.scales.len(),
                self.zeros.len()
            )));
        }
        Ok(())
    }

    pub fn groups_per_row(&self) -> usize {
        self.cols / self.spec.group
    }

    pub fn words_per_row(&self) -> usize {
        self.spec.words_per_row(self.cols)
    }

    /// Levels of row `r`.
    pub fn row_levels(&self, r: usize) -> Vec<u8> {
        let wpr = self.words_per_row();
        let mut out = vec![0u8; self.cols];
        unpack_levels(
            &self.words[r * wpr..(r + 1) * wpr],
            self.spec.bits,
            &mut out,
        );
        out
    }

    /// All levels, `[rows, cols]`.
    pub fn levels(&self) -> Vec<u8> {
        (0..self.rows).flat_map(|r| self.row_levels(r)).collect()
    }

    /// The f32 weight `[rows, cols]` this tensor stands for: the reference every kernel is
    /// tested against.
    pub fn dequantize(&self) -> Vec<f32> {
        let g = self.spec.group;
        let gpr = self.groups_per_row();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for (c, q) in self.row_levels(r).into_iter().enumerate() {
                let gi = r * gpr + c / g;
                let (s, z) = (self.scales[gi].to_f32(), self.zeros[gi].to_f32());
                out.push((q as f32 - z) * s);
            }
        }
        out
    }

    /// Bytes this tensor occupies: packed words plus f16 scales and zeros.
    pub fn nbytes(&self) -> usize {
        self.words.len() * 4 + (self.scales.len() + self.zeros.len()) * 2
    }

    /// Effective bits per weight, scales and zeros included.
    pub fn bits_per_weight(&self) -> f64 {
        self.nbytes() as f64 * 8.0 / (self.rows * self.cols).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bit_values_straddle_words_and_come_back() {
        let levels: Vec<u8> = (0..64).map(|i| (i * 5 % 8) as u8).collect();
        let mut words = vec![0u32; 6];
        pack_levels(&levels, 3, &mut words);
        let mut back = vec![0u8; 64];
        unpack_levels(&words, 3, &mut back);
        assert_eq!(levels, back);
    }
}
