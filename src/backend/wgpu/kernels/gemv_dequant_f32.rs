//! Dispatch of `gemv_dequant_f32.wgsl`: `y [m, n] = x [m, k] · Wᵀ` for a packed `W [n, k]`,
//! dequantized on the fly (the decode path, where reading the weights dominates).

use half::f16;

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;
use crate::quant::PackedTensor;

pub(super) const SRC: &str = include_str!("gemv_dequant_f32.wgsl");

wgsl_params!(Params { n, k, m, group });

/// A packed weight in GPU buffers, laid out exactly as [`PackedTensor`] (see the WGSL header).
#[derive(Debug, Clone)]
pub struct GpuPacked {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub group: usize,
    words: GpuBuffer,
    scales: GpuBuffer,
    zeros: GpuBuffer,
}

/// f16 values two to a u32 word, low half first (what `unpack2x16float` reads).
fn f16_pairs(v: &[f16]) -> Vec<u32> {
    v.chunks(2)
        .map(|c| {
            let lo = c[0].to_bits() as u32;
            let hi = c.get(1).map_or(0, |h| h.to_bits() as u32);
            lo | (hi << 16)
        })
        .collect()
}

impl GpuPacked {
    /// Upload a packed tensor (validated first: it may come from a file).
    pub fn upload(ctx: &GpuContext, w: &PackedTensor) -> Result<Self> {
        w.validate()?;
        Ok(Self {
            rows: w.rows,
            cols: w.cols,
            bits: w.spec.bits,
            group: w.spec.group,
            words: ctx.upload_u32("packed words", &w.words)?,
            scales: ctx.upload_u32("packed scales", &f16_pairs(&w.scales))?,
            zeros: ctx.upload_u32("packed zeros", &f16_pairs(&w.zeros))?,
        })
    }
}

impl GpuPacked {
    /// Words, scales and zeros, in the binding order of the packed kernels.
    pub(super) fn buffers(&self) -> (&GpuBuffer, &GpuBuffer, &GpuBuffer) {
        (&self.words, &self.scales, &self.zeros)
    }

    /// Bytes on the device (words, scales and zeros).
    pub fn nbytes(&self) -> usize {
        4 * (self.words.len() + self.scales.len() + self.zeros.len())
    }
}

/// `x [m, k]` (row-major f32) times `Wᵀ` -> `y [m, n]`.
pub fn gemv_dequant(ctx: &GpuContext, x: &GpuBuffer, m: usize, w: &GpuPacked) -> Result<GpuBuffer> {
    const OP: &str = "gemv_dequant";
    need(OP, "x", x, m * w.cols)?;
    let max_z = ctx.limits().max_compute_workgroups_per_dimension as usize;
    if m == 0 || m > max_z {
        return Err(shape_err(
            OP,
            format!("{m} input rows; this kernel takes 1..={max_z} (use the GEMM for prefill)"),
        ));
    }
    let params = Params {
        n: u32_of("rows", w.rows)?,
        k: u32_of("cols", w.cols)?,
        m: u32_of("m", m)?,
        group: u32_of("group", w.group)?,
    };
    let pipeline =
        ctx.reduce_pipeline(KernelKey::new("gemv_dequant_f32").with("BITS", w.bits), SRC)?;
    let y = ctx.storage("gemv out", m * w.rows)?;
    // Each workgroup writes ROWS = 4 output rows (see the WGSL header).
    let (gx, gy) = ctx.grid(OP, w.rows.div_ceil(4))?;
    ctx.dispatch(
        &pipeline,
        &params.words(),
        &[&w.words, &w.scales, &w.zeros, x, &y],
        (gx, gy, m as u32),
    )?;
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_pairs_put_the_even_value_low() {
        let v = [f16::from_f32(1.0), f16::from_f32(2.0), f16::from_f32(3.0)];
        let w = f16_pairs(&v);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0] & 0xffff, v[0].to_bits() as u32);
        assert_eq!(w[0] >> 16, v[1].to_bits() as u32);
        assert_eq!(w[1], v[2].to_bits() as u32);
    }
}
