//! Dispatch of `rope_f32.wgsl`.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("rope_f32.wgsl");
const WG: usize = 256;

wgsl_params!(Params { rows, s, d });

/// Rotate `x [rows, d]` (row = (batch, head, position), position = row % s) by `cos`/`sin [s, d/2]`.
pub fn rope(
    ctx: &GpuContext,
    x: &GpuBuffer,
    cos: &GpuBuffer,
    sin: &GpuBuffer,
    rows: usize,
    s: usize,
    d: usize,
) -> Result<GpuBuffer> {
    const OP: &str = "rope";
    if rows == 0 || s == 0 || d == 0 || !d.is_multiple_of(2) || !rows.is_multiple_of(s) {
        return Err(shape_err(
            OP,
            format!("{rows} rows of {d} values at {s} positions (d even, rows a multiple of s)"),
        ));
    }
    need(OP, "x", x, rows * d)?;
    need(OP, "cos", cos, s * d / 2)?;
    need(OP, "sin", sin, s * d / 2)?;
    let params = Params {
        rows: u32_of("rows", rows)?,
        s: u32_of("s", s)?,
        d: u32_of("d", d)?,
    };
    u32_of("rows * d", rows * d)?;
    let pipeline = ctx.pipeline(&KernelKey::new("rope_f32"), SRC)?;
    let y = ctx.storage("rope out", rows * d)?;
    let (gx, gy) = ctx.grid(OP, (rows * d / 2).div_ceil(WG))?;
    ctx.dispatch(&pipeline, &params.words(), &[x, cos, sin, &y], (gx, gy, 1))?;
    Ok(y)
}
