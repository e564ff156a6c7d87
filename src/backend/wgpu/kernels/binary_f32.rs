//! Dispatch of `binary_f32.wgsl`: add, sub and mul with numpy broadcasting.

use super::copy_strided_f32::{contiguous_strides, pad6};
use super::{need, shape_err, u32_of, wgsl_params, RANK};
use crate::backend::wgpu::{GpuBuffer, GpuContext, KernelKey};
use crate::error::Result;

pub(super) const SRC: &str = include_str!("binary_f32.wgsl");
const WG: usize = 256;

wgsl_params!(Params {
    len,
    s0,
    s1,
    s2,
    s3,
    s4,
    s5,
    a0,
    a1,
    a2,
    a3,
    a4,
    a5,
    b0,
    b1,
    b2,
    b3,
    b4,
    b5
});

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
}

/// The broadcast shape of `a` and `b` (numpy rules), or `None` when they do not broadcast.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let lead = rank - s.len();
        if i < lead {
            1
        } else {
            s[i - lead]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Strides that read a contiguous `shape` as `out` (0 along broadcast dimensions).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                own[i - lead]
            }
        })
        .collect()
}

/// `a OP b` for contiguous `a` of `a_shape` and `b` of `b_shape`; returns the output and its shape.
pub fn binary(
    ctx: &GpuContext,
    op: BinaryOp,
    a: &GpuBuffer,
    a_shape: &[usize],
    b: &GpuBuffer,
    b_shape: &[usize],
) -> Result<(GpuBuffer, Vec<usize>)> {
    const OP: &str = "binary";
    let out = broadcast_shape(a_shape, b_shape)
        .filter(|o| o.len() <= RANK)
        .ok_or_else(|| {
            shape_err(
                OP,
                format!("shapes {a_shape:?} and {b_shape:?} do not broadcast"),
            )
        })?;
    need(OP, "a", a, a_shape.iter().product())?;
    need(OP, "b", b, b_shape.iter().product())?;
    let len: usize = out.iter().product();
    if len == 0 {
        return Err(shape_err(OP, format!("empty output {out:?}")));
    }
    let s = pad6(&out, 1)?;
    let sa = pad6(&broadcast_strides(a_shape, &out), 0)?;
    let sb = pad6(&broadcast_strides(b_shape, &out), 0)?;
    let params = Params {
        len: u32_of("len", len)?,
        s0: s[0],
        s1: s[1],
        s2: s[2],
        s3: s[3],
        s4: s[4],
        s5: s[5],
        a0: sa[0],
        a1: sa[1],
        a2: sa[2],
        a3: sa[3],
        a4: sa[4],
        a5: sa[5],
        b0: sb[0],
        b1: sb[1],
        b2: sb[2],
        b3: sb[3],
        b4: sb[4],
        b5: sb[5],
    };
    let pipeline = ctx.pipeline(&KernelKey::new("binary_f32").with("OP", op as u32), SRC)?;
    let y = ctx.storage("binary out", len)?;
    let (gx, gy) = ctx.grid(OP, len.div_ceil(WG))?;
    ctx.dispatch(&pipeline, &params.words(), &[a, b, &y], (gx, gy, 1))?;
    Ok((y, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
    }
}
