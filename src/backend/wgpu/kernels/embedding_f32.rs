//! Dispatch of `embedding_f32.wgsl`: gather rows of a (possibly split) table.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("embedding_f32.wgsl");
const WG: usize = 256;

wgsl_params!(Params {
    n,
    d,
    row_start,
    rows
});

/// Gather `n` ids from table parts `(first row, rows, buffer)` of width `d` into `[n, d]`.
/// The caller has checked every id against the vocabulary.
pub fn embedding(
    ctx: &GpuContext,
    ids: &GpuBuffer,
    n: usize,
    parts: &[(usize, usize, &GpuBuffer)],
    d: usize,
) -> Result<GpuBuffer> {
    const OP: &str = "embedding";
    if n == 0 || d == 0 || parts.is_empty() {
        return Err(shape_err(OP, format!("empty gather of {n} ids x {d}")));
    }
    need(OP, "ids", ids, n)?;
    u32_of("n * d", n * d)?;
    let pipeline = ctx.pipeline(&KernelKey::new("embedding_f32"), SRC)?;
    let out = ctx.storage("embedding out", n * d)?;
    let (gx, gy) = ctx.grid(OP, (n * d).div_ceil(WG))?;
    for &(start, rows, table) in parts {
        need(OP, "table", table, rows * d)?;
        let params = Params {
            n: u32_of("n", n)?,
            d: u32_of("d", d)?,
            row_start: u32_of("row", start)?,
            rows: u32_of("rows", rows)?,
        };
        ctx.dispatch(&pipeline, &params.words(), &[ids, table, &out], (gx, gy, 1))?;
    }
    Ok(out)
}
