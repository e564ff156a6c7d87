//! Dispatch of `gelu_erf_f32.wgsl` (Qwen2-VL's patch merger).

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("gelu_erf_f32.wgsl");
/// Invocations per workgroup in the WGSL (256 is WebGPU's guaranteed minimum).
const WG: usize = 256;

wgsl_params!(Params { len });

/// GELU (exact erf) over `len` elements.
pub fn gelu_erf(ctx: &GpuContext, x: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    const OP: &str = "gelu_erf";
    if len == 0 {
        return Err(shape_err(OP, "empty input".into()));
    }
    need(OP, "x", x, len)?;
    let params = Params {
        len: u32_of("len", len)?,
    };
    let pipeline = ctx.pipeline(&KernelKey::new("gelu_erf_f32"), SRC)?;
    let y = ctx.storage("gelu out", len)?;
    let (gx, gy) = ctx.grid(OP, len.div_ceil(WG))?;
    ctx.dispatch(&pipeline, &params.words(), &[x, &y], (gx, gy, 1))?;
    Ok(y)
}
