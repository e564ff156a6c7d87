//! Dispatch of `attention_f32.wgsl`: fused attention reading keys and values in place from a
//! preallocated KV cache.

use super::{need, shape_err, u32_of, wgsl_params};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("attention_f32.wgsl");

wgsl_params!(Params {
    rows,
    heads,
    kv_heads,
    s,
    t,
    d,
    cap,
    has_mask,
    mask_batch_stride,
    mask_row_stride,
    scale
});

/// An additive mask and where row `(batch, query)` of it starts: `batch * batch_stride +
/// query * row_stride`, keys contiguous. A shared `[s, t]` mask has batch stride 0; a
/// per-image key mask `[b, 1, 1, t]` (padded patches) has row stride 0.
#[derive(Debug, Clone)]
pub struct AttentionMask {
    pub buf: GpuBuffer,
    pub batch_stride: usize,
    pub row_stride: usize,
}

/// Shapes of one attention call: `q [batch, heads, s, d]`, keys and values
/// `[batch, kv_heads, cap, d]` of which the first `t` positions are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub s: usize,
    pub t: usize,
    pub d: usize,
    pub cap: usize,
}

/// `mask` is added to the scores when given.
pub fn attention(
    ctx: &GpuContext,
    q: &GpuBuffer,
    k: &GpuBuffer,
    v: &GpuBuffer,
    mask: Option<&AttentionMask>,
    sh: AttentionShape,
    scale: f32,
) -> Result<GpuBuffer> {
    const OP: &str = "attention";
    let AttentionShape {
        batch,
        heads,
        kv_heads,
        s,
        t,
        d,
        cap,
    } = sh;
    if batch == 0 || s == 0 || t == 0 || d == 0 || kv_heads == 0 || t > cap {
        return Err(shape_err(OP, format!("empty or inconsistent {sh:?}")));
    }
    if !heads.is_multiple_of(kv_heads) {
        return Err(shape_err(
            OP,
            format!("{heads} query heads do not share {kv_heads} key/value heads evenly"),
        ));
    }
    let rows = batch * heads * s;
    need(OP, "q", q, rows * d)?;
    need(OP, "k", k, batch * kv_heads * cap * d)?;
    need(OP, "v", v, batch * kv_heads * cap * d)?;
    if let Some(m) = mask {
        let last_row = (batch - 1) * m.batch_stride + (s - 1) * m.row_stride;
        need(OP, "mask", &m.buf, last_row + t)?;
    }
    let params = Params {
        rows: u32_of("rows", rows)?,
        heads: u32_of("heads", heads)?,
        kv_heads: u32_of("kv_heads", kv_heads)?,
        s: u32_of("s", s)?,
        t: u32_of("t", t)?,
        d: u32_of("d", d)?,
        cap: u32_of("cap", cap)?,
        has_mask: mask.is_some() as u32,
        mask_batch_stride: u32_of("mask batch stride", mask.map_or(0, |m| m.batch_stride))?,
        mask_row_stride: u32_of("mask row stride", mask.map_or(0, |m| m.row_stride))?,
        scale: scale.to_bits(),
    };
    u32_of("rows * t", rows * t)?;
    u32_of("cache size", batch * kv_heads * cap * d)?;
    let pipeline = ctx.reduce_pipeline(KernelKey::new("attention_f32"), SRC)?;
    let scores = ctx.storage("attention scores", rows * t)?;
    let out = ctx.storage("attention out", rows * d)?;
    // Without a mask, any buffer fills the binding; the kernel does not read it.
    let mask = mask.map_or(q, |m| &m.buf);
    let (gx, gy) = ctx.grid(OP, rows)?;
    ctx.dispatch(
        &pipeline,
        &params.words(),
        &[q, k, v, mask, &scores, &out],
        (gx, gy, 1),
    )?;
    Ok(out)
}
