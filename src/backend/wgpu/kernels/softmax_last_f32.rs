//! Dispatch of `softmax_last_f32.wgsl`.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("softmax_last_f32.wgsl");

wgsl_params!(Params { rows, d });

/// Softmax of each row of `x [rows, d]`.
pub fn softmax_last(ctx: &GpuContext, x: &GpuBuffer, rows: usize, d: usize) -> Result<GpuBuffer> {
    const OP: &str = "softmax_last";
    if rows == 0 || d == 0 {
        return Err(shape_err(OP, format!("empty input [{rows}, {d}]")));
    }
    need(OP, "x", x, rows * d)?;
    let params = Params {
        rows: u32_of("rows", rows)?,
        d: u32_of("d", d)?,
    };
    u32_of("rows * d", rows * d)?;
    let pipeline = ctx.reduce_pipeline(KernelKey::new("softmax_last_f32"), SRC)?;
    let y = ctx.storage("softmax out", rows * d)?;
    let (gx, gy) = ctx.grid(OP, rows)?;
    ctx.dispatch(&pipeline, &params.words(), &[x, &y], (gx, gy, 1))?;
    Ok(y)
}
