//! Dispatch of `matmul_tiled_f32.wgsl` (prefill and attention matmuls on f32 tensors).

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("matmul_tiled_f32.wgsl");
const TILE: usize = 16;

wgsl_params!(Params {
    m,
    n,
    k,
    b_trans,
    b_batched
});

/// Shape of `C [batch, m, n] = A [batch, m, k] · B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// B is `[n, k]` (PyTorch linear weight) instead of `[k, n]`.
    pub b_trans: bool,
    /// B has its own matrix per batch; otherwise one B serves every batch.
    pub b_batched: bool,
    /// B holds f16 pairs in u32 words (a half-precision weight), not f32.
    pub b_f16: bool,
}

pub fn matmul(ctx: &GpuContext, a: &GpuBuffer, b: &GpuBuffer, s: MatmulShape) -> Result<GpuBuffer> {
    const OP: &str = "matmul";
    if s.batch == 0 || s.m == 0 || s.n == 0 || s.k == 0 {
        return Err(shape_err(OP, format!("empty matmul {s:?}")));
    }
    need(OP, "a", a, s.batch * s.m * s.k)?;
    let b_values = if s.b_batched { s.batch } else { 1 } * s.k * s.n;
    need(
        OP,
        "b",
        b,
        if s.b_f16 {
            b_values.div_ceil(2)
        } else {
            b_values
        },
    )?;
    let params = Params {
        m: u32_of("m", s.m)?,
        n: u32_of("n", s.n)?,
        k: u32_of("k", s.k)?,
        b_trans: s.b_trans as u32,
        b_batched: s.b_batched as u32,
    };
    // Element offsets inside the kernel are u32.
    u32_of("batch * m * n", s.batch * s.m * s.n)?;
    u32_of("batch * m * k", s.batch * s.m * s.k)?;
    let max = ctx.limits().max_compute_workgroups_per_dimension as usize;
    let (gx, gy) = (s.n.div_ceil(TILE), s.m.div_ceil(TILE));
    if gx > max || gy > max || s.batch > max {
        return Err(crate::Error::gpu(
            crate::GpuErrorKind::LimitExceeded,
            format!(
                "matmul {s:?} needs a grid of {gx} x {gy} x {} workgroups, over {max}",
                s.batch
            ),
        ));
    }
    let pipeline = ctx.pipeline(
        &KernelKey::new("matmul_tiled_f32").with("B_F16", s.b_f16 as u32),
        SRC,
    )?;
    let c = ctx.storage("matmul out", s.batch * s.m * s.n)?;
    ctx.dispatch(
        &pipeline,
        &params.words(),
        &[a, b, &c],
        (gx as u32, gy as u32, s.batch as u32),
    )?;
    Ok(c)
}
