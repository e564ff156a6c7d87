//! Dispatch of `gemm_dequant_f32.wgsl`: the packed-weight GEMM for prefill (many input rows).

use super::gemv_dequant_f32::GpuPacked;
use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::{Error, GpuErrorKind, Result};

pub(super) const SRC: &str = include_str!("gemm_dequant_f32.wgsl");
const TILE: usize = 16;

wgsl_params!(Params { n, k, m, group });

/// `x [m, k]` times the packed `Wᵀ` -> `y [m, n]`, in 16 x 16 output tiles.
pub fn gemm_dequant(ctx: &GpuContext, x: &GpuBuffer, m: usize, w: &GpuPacked) -> Result<GpuBuffer> {
    const OP: &str = "gemm_dequant";
    if m == 0 {
        return Err(shape_err(OP, "no input rows".into()));
    }
    need(OP, "x", x, m * w.cols)?;
    u32_of("m * k", m * w.cols)?;
    u32_of("m * n", m * w.rows)?;
    let max = ctx.limits().max_compute_workgroups_per_dimension as usize;
    let (gx, gy) = (w.rows.div_ceil(TILE), m.div_ceil(TILE));
    if gx > max || gy > max {
        return Err(Error::gpu(
            GpuErrorKind::LimitExceeded,
            format!(
                "gemm_dequant of {m} x {} needs {gx} x {gy} workgroups, over {max}",
                w.rows
            ),
        ));
    }
    let params = Params {
        n: u32_of("rows", w.rows)?,
        k: u32_of("cols", w.cols)?,
        m: u32_of("m", m)?,
        group: u32_of("group", w.group)?,
    };
    let pipeline = ctx.pipeline(
        &KernelKey::new("gemm_dequant_f32").with("BITS", w.bits),
        SRC,
    )?;
    let y = ctx.storage("gemm out", m * w.rows)?;
    let (words, scales, zeros) = w.buffers();
    ctx.dispatch(
        &pipeline,
        &params.words(),
        &[words, scales, zeros, x, &y],
        (gx as u32, gy as u32, 1),
    )?;
    Ok(y)
}
