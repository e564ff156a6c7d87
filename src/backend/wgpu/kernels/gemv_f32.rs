//! Dispatch of `gemv_f32.wgsl`: the dense decode GEMV (and the baseline the int4 GEMV is
//! measured against in `relvqa bench kernels`).

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("gemv_f32.wgsl");

wgsl_params!(Params { n, k, m });

/// Whether [`gemv`] takes a `k`-wide weight (vec4 loads: 4 f32 or 8 f16 values).
pub fn gemv_fits(k: usize, w_f16: bool) -> bool {
    k > 0 && k.is_multiple_of(if w_f16 { 8 } else { 4 })
}

/// `x [m, k] · Wᵀ` for `w [n, k]`, f32 or (`w_f16`) f16 pairs; see [`gemv_fits`] for `k`.
pub fn gemv(
    ctx: &GpuContext,
    x: &GpuBuffer,
    w: &GpuBuffer,
    w_f16: bool,
    (m, n, k): (usize, usize, usize),
) -> Result<GpuBuffer> {
    const OP: &str = "gemv";
    let max_z = ctx.limits().max_compute_workgroups_per_dimension as usize;
    if m == 0 || m > max_z || n == 0 || !gemv_fits(k, w_f16) {
        return Err(shape_err(
            OP,
            format!(
                "[{m}, {k}] x [{n}, {k}]ᵀ: needs 1..={max_z} rows and k a multiple of {}",
                if w_f16 { 8 } else { 4 }
            ),
        ));
    }
    need(OP, "x", x, m * k)?;
    need(OP, "w", w, if w_f16 { n * k / 2 } else { n * k })?;
    let params = Params {
        n: u32_of("n", n)?,
        k: u32_of("k", k)?,
        m: u32_of("m", m)?,
    };
    u32_of("n * k", n * k)?;
    let pipeline =
        ctx.reduce_pipeline(KernelKey::new("gemv_f32").with("W_F16", w_f16 as u32), SRC)?;
    let y = ctx.storage("gemv out", m * n)?;
    let (gx, gy) = ctx.grid(OP, n)?;
    ctx.dispatch(&pipeline, &params.words(), &[w, x, &y], (gx, gy, m as u32))?;
    Ok(y)
}
