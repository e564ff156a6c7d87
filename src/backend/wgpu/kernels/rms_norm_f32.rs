//! Dispatch of `rms_norm_f32.wgsl`.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("rms_norm_f32.wgsl");

wgsl_params!(Params { rows, d, eps_bits });

/// `x [rows, d]` normalised per row and scaled by `w [d]`.
pub fn rms_norm(
    ctx: &GpuContext,
    x: &GpuBuffer,
    w: &GpuBuffer,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<GpuBuffer> {
    const OP: &str = "rms_norm";
    if rows == 0 || d == 0 {
        return Err(shape_err(OP, format!("empty input [{rows}, {d}]")));
    }
    need(OP, "x", x, rows * d)?;
    need(OP, "w", w, d)?;
    let params = Params {
        rows: u32_of("rows", rows)?,
        d: u32_of("d", d)?,
        eps_bits: eps.to_bits(),
    };
    u32_of("rows * d", rows * d)?;
    let pipeline = ctx.reduce_pipeline(KernelKey::new("rms_norm_f32"), SRC)?;
    let y = ctx.storage("rms_norm out", rows * d)?;
    let (gx, gy) = ctx.grid(OP, rows)?;
    ctx.dispatch(&pipeline, &params.words(), &[x, w, &y], (gx, gy, 1))?;
    Ok(y)
}
