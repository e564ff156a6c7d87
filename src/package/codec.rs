//! Tensor values ⇄ the bytes a shard stores for them.
//!
//! Float tensors are their values little-endian, row-major. A packed tensor is `words` (u32 LE),
//! then `scales` (f16 LE), then `zeros` (f16 LE): the three GPU buffer segments of
//! [`PackedTensor`], back to back, so each can be uploaded as one slice of the payload.
//! Reading them back is [`super::decoder`]'s, chunk by chunk as the bytes arrive.

use half::f16;

use super::manifest::{Encoding, FloatDtype, QuantEncoding};
use crate::error::{Error, Result};
use crate::quant::PackedTensor;

/// A tensor to be written into a package.
#[derive(Debug, Clone, PartialEq)]
pub enum PackageTensor {
    /// Unquantized weights (norms, embeddings, biases) kept in f16.
    Float {
        shape: Vec<usize>,
        data: Vec<f16>,
    },
    /// Unquantized weights kept in f32, for the few that f16 would damage.
    Float32 {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    Packed(PackedTensor),
}

/// Values of a tensor read back from a package.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F16(Vec<f16>),
    F32(Vec<f32>),
    Packed(PackedTensor),
}

/// One tensor read from a package, its bytes checked against the manifest's sha256.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl PackageTensor {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            PackageTensor::Float { shape, .. } | PackageTensor::Float32 { shape, .. } => {
                shape.clone()
            }
            PackageTensor::Packed(p) => vec![p.rows, p.cols],
        }
    }

    pub fn encoding(&self) -> Encoding {
        match self {
            PackageTensor::Float { .. } => Encoding::Dtype(FloatDtype::F16),
            PackageTensor::Float32 { .. } => Encoding::Dtype(FloatDtype::F32),
            PackageTensor::Packed(p) => Encoding::Quant(QuantEncoding {
                method: p.method,
                bits: p.spec.bits,
                group: p.spec.group,
                axis: 1,
            }),
        }
    }

    /// Check the values agree with the shape (and a packed tensor's arrays with its spec).
    pub fn validate(&self, name: &str) -> Result<()> {
        let (len, shape) = match self {
            PackageTensor::Float { shape, data } => (data.len(), shape),
            PackageTensor::Float32 { shape, data } => (data.len(), shape),
            PackageTensor::Packed(p) => {
                return p
                    .validate()
                    .map_err(|e| Error::Package(format!("tensor `{name}`: {e}")))
            }
        };
        if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(len) {
            Ok(())
        } else {
            Err(Error::Package(format!(
                "tensor `{name}`: {len} values do not fill shape {shape:?}"
            )))
        }
    }

    /// The payload bytes, after [`Self::validate`].
    pub fn to_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.validate(name)?;
        Ok(match self {
            PackageTensor::Float { data, .. } => {
                data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            PackageTensor::Float32 { data, .. } => {
                data.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            PackageTensor::Packed(p) => {
                let mut out = Vec::with_capacity(p.nbytes());
                out.extend(p.words.iter().flat_map(|w| w.to_le_bytes()));
                out.extend(p.scales.iter().flat_map(|v| v.to_le_bytes()));
                out.extend(p.zeros.iter().flat_map(|v| v.to_le_bytes()));
                out
            }
        })
    }
}
