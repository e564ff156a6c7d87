//! One WGSL file per kernel, each with its dispatch function in the Rust file of the same name.
//!
//! Conventions every kernel follows (see [`GpuContext::dispatch`](super::GpuContext)):
//! binding 0 is a uniform `Params` struct of `u32` fields, bindings 1.. are storage buffers in
//! the order the dispatch function passes them; the entry point is `main`; rows that do not fit
//! one grid dimension are spread over `x` and `y` (`row = wid.x + wid.y * nwg.x`).
//!
//! Kernels that reduce (norms, softmax, GEMVs, attention) call `reduce_sum`/`reduce_max`, which
//! are not in their files: `reduce_workgroup.wgsl` (a workgroup-memory tree, every adapter) or
//! `reduce_subgroup.wgsl` (subgroup operations, where the device has them) is appended when the
//! pipeline is created ([`GpuContext::reduce_pipeline`](super::GpuContext)). naga 30 rejects
//! `enable subgroups;` (unimplemented extension) while Chrome requires it, and wgpu 30 on the
//! web never reports the feature, so the subgroup path is native-only today; SwiftShader in
//! Chromium runs the workgroup path.

mod attention_f32;
mod binary_f32;
mod copy_strided_f32;
mod embedding_f32;
mod gelu_erf_f32;
mod gelu_tanh_f32;
mod gemm_dequant_f32;
mod gemv_dequant_f32;
mod gemv_f32;
mod layer_norm_f32;
mod matmul_tiled_f32;
mod rms_norm_f32;
mod rope_f32;
mod silu_mul_f32;
mod softmax_last_f32;
mod unary_f32;

pub use attention_f32::{attention, AttentionMask, AttentionShape};
pub use binary_f32::{binary, broadcast_shape, BinaryOp};
pub use copy_strided_f32::{contiguous_strides, copy_strided, View};
pub use embedding_f32::embedding;
pub use gelu_erf_f32::gelu_erf;
pub use gelu_tanh_f32::gelu_tanh;
pub use gemm_dequant_f32::gemm_dequant;
pub use gemv_dequant_f32::{gemv_dequant, GpuPacked};
pub use gemv_f32::{gemv, gemv_fits};
pub use layer_norm_f32::layer_norm;
pub use matmul_tiled_f32::{matmul, MatmulShape};
pub use rms_norm_f32::rms_norm;
pub use rope_f32::rope;
pub use silu_mul_f32::silu_mul;
pub use softmax_last_f32::softmax_last;
pub use unary_f32::{unary, UnaryOp};

/// The highest rank the strided kernels (copy, broadcasting binary ops) take.
pub const RANK: usize = 6;

use crate::error::{Error, GpuErrorKind, Result};

/// Declare a kernel's uniform parameters once: the Rust struct, its field names (checked
/// against the WGSL `struct Params` by a test, so the two cannot drift apart) and its words,
/// padded to 16 bytes as uniform bindings want.
macro_rules! wgsl_params {
    ($(#[$m:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default)]
        pub(crate) struct $name {
            $(pub $field: u32),*
        }

        impl $name {
            #[allow(dead_code)]
            pub(crate) const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            pub(crate) fn words(&self) -> Vec<u32> {
                let mut v = vec![$(self.$field),*];
                v.resize(v.len().div_ceil(4).max(1) * 4, 0);
                v
            }
        }
    };
}
pub(crate) use wgsl_params;

/// A size as a `u32` kernel parameter, or a typed error naming what was too large.
pub(crate) fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::gpu(
            GpuErrorKind::LimitExceeded,
            format!("{what} = {v} does not fit a 32-bit kernel index"),
        )
    })
}

/// A shape error in a kernel call: the caller passed buffers that disagree with the shape.
pub(crate) fn shape_err(op: &'static str, msg: String) -> Error {
    Error::Backend {
        backend: "wgpu",
        op,
        msg,
    }
}

/// Check that `buf` holds at least `need` elements.
pub(crate) fn need(
    op: &'static str,
    name: &str,
    buf: &super::GpuBuffer,
    need: usize,
) -> Result<()> {
    if buf.len() < need {
        return Err(shape_err(
            op,
            format!(
                "`{name}` holds {} values, the shape needs {need}",
                buf.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Field names of the first `struct Params { .. }` in a WGSL source.
    fn wgsl_fields(src: &str) -> Vec<String> {
        let Some(start) = src.find("struct Params") else {
            return Vec::new();
        };
        let body = &src[start..];
        let (Some(open), Some(close)) = (body.find('{'), body.find('}')) else {
            return Vec::new();
        };
        body[open + 1..close]
            .split(',')
            .filter_map(|f| f.split(':').next())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }

    #[test]
    fn rust_params_match_wgsl_params() {
        let cases: [(&[&str], &str); 16] = [
            (
                super::attention_f32::Params::FIELDS,
                super::attention_f32::SRC,
            ),
            (super::binary_f32::Params::FIELDS, super::binary_f32::SRC),
            (
                super::copy_strided_f32::Params::FIELDS,
                super::copy_strided_f32::SRC,
            ),
            (
                super::embedding_f32::Params::FIELDS,
                super::embedding_f32::SRC,
            ),
            (
                super::gemm_dequant_f32::Params::FIELDS,
                super::gemm_dequant_f32::SRC,
            ),
            (super::gemv_f32::Params::FIELDS, super::gemv_f32::SRC),
            (super::rope_f32::Params::FIELDS, super::rope_f32::SRC),
            (super::unary_f32::Params::FIELDS, super::unary_f32::SRC),
            (
                super::gelu_tanh_f32::Params::FIELDS,
                super::gelu_tanh_f32::SRC,
            ),
            (
                super::gelu_erf_f32::Params::FIELDS,
                super::gelu_erf_f32::SRC,
            ),
            (
                super::layer_norm_f32::Params::FIELDS,
                super::layer_norm_f32::SRC,
            ),
            (
                super::gemv_dequant_f32::Params::FIELDS,
                super::gemv_dequant_f32::SRC,
            ),
            (
                super::matmul_tiled_f32::Params::FIELDS,
                super::matmul_tiled_f32::SRC,
            ),
            (
                super::rms_norm_f32::Params::FIELDS,
                super::rms_norm_f32::SRC,
            ),
            (
                super::silu_mul_f32::Params::FIELDS,
                super::silu_mul_f32::SRC,
            ),
            (
                super::softmax_last_f32::Params::FIELDS,
                super::softmax_last_f32::SRC,
            ),
        ];
        for (fields, src) in cases {
            assert_eq!(wgsl_fields(src), fields);
        }
    }
}
