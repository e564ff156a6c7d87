//! Dispatch of `copy_strided_f32.wgsl`: every layout op of the backend is one strided copy.

use super::{shape_err, u32_of, wgsl_params, RANK};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("copy_strided_f32.wgsl");
const WG: usize = 256;

wgsl_params!(Params {
    len,
    in_offset,
    out_offset,
    s0,
    s1,
    s2,
    s3,
    s4,
    s5,
    i0,
    i1,
    i2,
    i3,
    i4,
    i5,
    o0,
    o1,
    o2,
    o3,
    o4,
    o5
});

/// Where a strided view starts and how it steps, in elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub offset: usize,
    pub strides: Vec<usize>,
}

impl View {
    /// The row-major strides of a contiguous `shape`.
    pub fn contiguous(shape: &[usize]) -> Self {
        Self {
            offset: 0,
            strides: contiguous_strides(shape),
        }
    }

    /// The largest element index this view reaches for `shape`, plus one.
    fn extent(&self, shape: &[usize]) -> usize {
        self.offset
            + shape
                .iter()
                .zip(&self.strides)
                .map(|(&n, &s)| n.saturating_sub(1) * s)
                .sum::<usize>()
            + 1
    }
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Pad `v` on the left to [`RANK`] entries with `fill`.
pub(super) fn pad6(v: &[usize], fill: usize) -> Result<[u32; RANK]> {
    let mut out = [u32_of("dim", fill)?; RANK];
    let lead = RANK - v.len();
    for (i, &x) in v.iter().enumerate() {
        out[lead + i] = u32_of("dim", x)?;
    }
    Ok(out)
}

/// Copy the elements of `shape` from `src` read through `from` into `dst` written through `to`.
/// An empty shape (some dimension 0) records nothing.
pub fn copy_strided(
    ctx: &GpuContext,
    src: &GpuBuffer,
    from: &View,
    dst: &GpuBuffer,
    to: &View,
    shape: &[usize],
) -> Result<()> {
    const OP: &str = "copy_strided";
    if shape.len() > RANK || from.strides.len() != shape.len() || to.strides.len() != shape.len() {
        return Err(shape_err(
            OP,
            format!(
                "shape {shape:?} (rank <= {RANK}) with strides {:?} and {:?}",
                from.strides, to.strides
            ),
        ));
    }
    let len: usize = shape.iter().product();
    if len == 0 {
        return Ok(());
    }
    if from.extent(shape) > src.len() || to.extent(shape) > dst.len() {
        return Err(shape_err(
            OP,
            format!(
                "a copy of {shape:?} reaches past its buffers ({} and {} values)",
                src.len(),
                dst.len()
            ),
        ));
    }
    let s = pad6(shape, 1)?;
    let i = pad6(&from.strides, 0)?;
    let o = pad6(&to.strides, 0)?;
    let params = Params {
        len: u32_of("len", len)?,
        in_offset: u32_of("offset", from.offset)?,
        out_offset: u32_of("offset", to.offset)?,
        s0: s[0],
        s1: s[1],
        s2: s[2],
        s3: s[3],
        s4: s[4],
        s5: s[5],
        i0: i[0],
        i1: i[1],
        i2: i[2],
        i3: i[3],
        i4: i[4],
        i5: i[5],
        o0: o[0],
        o1: o[1],
        o2: o[2],
        o3: o[3],
        o4: o[4],
        o5: o[5],
    };
    let pipeline = ctx.pipeline(&KernelKey::new("copy_strided_f32"), SRC)?;
    let (gx, gy) = ctx.grid(OP, len.div_ceil(WG))?;
    ctx.dispatch(&pipeline, &params.words(), &[src, dst], (gx, gy, 1))
}
