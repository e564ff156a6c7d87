//! Dispatch of `unary_f32.wgsl`: scale and SiLU.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("unary_f32.wgsl");
const WG: usize = 256;

wgsl_params!(Params { len, factor });

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Scale(f32),
    Silu,
}

pub fn unary(ctx: &GpuContext, op: UnaryOp, x: &GpuBuffer, len: usize) -> Result<GpuBuffer> {
    const OP: &str = "unary";
    if len == 0 {
        return Err(shape_err(OP, "empty input".into()));
    }
    need(OP, "x", x, len)?;
    let (code, factor) = match op {
        UnaryOp::Scale(f) => (0, f.to_bits()),
        UnaryOp::Silu => (1, 0),
    };
    let params = Params {
        len: u32_of("len", len)?,
        factor,
    };
    let pipeline = ctx.pipeline(&KernelKey::new("unary_f32").with("OP", code), SRC)?;
    let y = ctx.storage("unary out", len)?;
    let (gx, gy) = ctx.grid(OP, len.div_ceil(WG))?;
    ctx.dispatch(&pipeline, &params.words(), &[x, &y], (gx, gy, 1))?;
    Ok(y)
}
