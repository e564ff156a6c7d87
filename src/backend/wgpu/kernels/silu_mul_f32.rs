//! Dispatch of `silu_mul_f32.wgsl`.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("silu_mul_f32.wgsl");
/// Invocations per workgroup in the WGSL (256 is WebGPU's guaranteed minimum).
const WG: usize = 256;

wgsl_params!(Params { len });

/// `silu(a) * b` over `len` elements.
pub fn silu_mul(ctx: &GpuContext, a: &GpuBuffer, b: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    const OP: &str = "silu_mul";
    if len == 0 {
        return Err(shape_err(OP, "empty input".into()));
    }
    need(OP, "a", a, len)?;
    need(OP, "b", b, len)?;
    let params = Params {
        len: u32_of("len", len)?,
    };
    let pipeline = ctx.pipeline(&KernelKey::new("silu_mul_f32"), SRC)?;
    let y = ctx.storage("silu_mul out", len)?;
    let (gx, gy) = ctx.grid(OP, len.div_ceil(WG))?;
    ctx.dispatch(&pipeline, &params.words(), &[a, b, &y], (gx, gy, 1))?;
    Ok(y)
}
