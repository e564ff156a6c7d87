//! Placeholder until the fused kernels land (branch `kern`): dequantize, then multiply.

use super::PackedTensor;
use crate::error::{Error, Result};

pub fn matmul_packed(x: &[f32], m: usize, w: &PackedTensor, out: &mut [f32]) -> Result<()> {
    if x.len() != m * w.cols || out.len() != m * w.rows {
        return Err(Error::Invalid("matmul_packed: length mismatch".into()));
    }
    let d = w.dequantize();
    for i in 0..m {
        for r in 0..w.rows {
            out[i * w.rows + r] = (0..w.cols)
                .map(|c| x[i * w.cols + c] * d[r * w.cols + c])
                .sum();
        }
    }
    Ok(())
}
