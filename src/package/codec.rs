//! Tensor values ⇄ the bytes a shard stores for them.
//!
//! Float tensors are their values little-endian, row-major. A packed tensor is `words` (u32 LE),
//! then `scales` (f16 LE), then `zeros` (f16 LE): the three GPU buffer segments of
//! [`PackedTensor`], back to back, so each can be uploaded as one slice of the payload.

use half::f16;

use super::manifest::{Encoding, FloatDtype, QuantEncoding, TensorEntry};
use crate::error::{Error, Result};
use crate::quant::{PackedTensor, QuantSpec};

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

fn f16s(bytes: &[u8]) -> Vec<f16> {
    bytes
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn to_usize(name: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| {
        Error::Package(format!(
            "tensor `{name}`: {v} bytes do not fit this platform's address space"
        ))
    })
}

/// Decode a tensor's verified bytes. `entry` has passed [`super::Manifest::validate`], so the
/// length matches the shape; it is checked again here because this is the last step before the
/// values are trusted.
pub fn decode_tensor(entry: &TensorEntry, bytes: &[u8]) -> Result<LoadedTensor> {
    let name = entry.name.as_str();
    let expected = entry.encoding.byte_length(&entry.shape);
    if expected != Some(bytes.len() as u64) {
        return Err(Error::Package(format!(
            "tensor `{name}`: got {} bytes, the manifest's shape needs {expected:?}",
            bytes.len()
        )));
    }
    let data = match entry.encoding {
        Encoding::Dtype(FloatDtype::F16) => TensorData::F16(f16s(bytes)),
        Encoding::Dtype(FloatDtype::F32) => TensorData::F32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Encoding::Quant(q) => TensorData::Packed(decode_packed(entry, &q, bytes)?),
    };
    Ok(LoadedTensor {
        name: entry.name.clone(),
        shape: entry.shape.clone(),
        data,
    })
}

fn decode_packed(entry: &TensorEntry, q: &QuantEncoding, bytes: &[u8]) -> Result<PackedTensor> {
    let name = entry.name.as_str();
    let bad_shape = || Error::Package(format!("tensor `{name}`: bad packed shape"));
    let sizes = Encoding::packed_sizes(q, &entry.shape).ok_or_else(bad_shape)?;
    let [rows, cols] = entry.shape[..] else {
        return Err(bad_shape());
    };
    let (words, rest) = bytes
        .split_at_checked(to_usize(name, sizes.words)?)
        .ok_or_else(bad_shape)?;
    let (scales, zeros) = rest
        .split_at_checked(to_usize(name, sizes.scales)?)
        .ok_or_else(bad_shape)?;
    let p = PackedTensor {
        spec: QuantSpec {
            bits: q.bits,
            group: q.group,
        },
        method: q.method,
        rows,
        cols,
        words: words
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        scales: f16s(scales),
        zeros: f16s(zeros),
    };
    p.validate()
        .map_err(|e| Error::Package(format!("tensor `{name}`: {e}")))?;
    Ok(p)
}
