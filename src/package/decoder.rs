//! Decoding a tensor's bytes into its values *as they arrive*, straight into arrays reserved
//! once at their final size.
//!
//! Collecting the bytes first and decoding at the end would hold the tensor twice (bytes and
//! values) at the moment it completes: for a 467 MB embedding that spans eight shards, that
//! is 934 MB of a wasm32 tab's 4 GiB. Decoding each chunk on arrival keeps the peak at the
//! tensor plus the chunk being pushed. An element cut by a chunk boundary waits in `carry`
//! (at most 3 bytes). The layouts are [`super::codec`]'s.

use half::f16;

use super::codec::{LoadedTensor, TensorData};
use super::manifest::{Encoding, FloatDtype, PackedSizes, TensorEntry};
use crate::error::{Error, Result};
use crate::quant::{PackedTensor, QuantSpec};

/// The typed arrays being filled.
enum Values {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// Words, then scales, then zeros, back to back in the payload.
    Packed {
        sizes: PackedSizes,
        words: Vec<u32>,
        scales: Vec<f16>,
        zeros: Vec<f16>,
    },
}

/// One tensor's values, filled from its bytes in order, in pieces of any size.
pub struct TensorDecoder {
    entry: TensorEntry,
    values: Values,
    /// Bytes consumed so far, `carry` included.
    received: u64,
    carry: [u8; 4],
    carry_len: usize,
}

/// A vector with room for exactly `n` values, or an error that says the tab (or machine) ran
/// out of memory rather than aborting, which is what a failed `Vec::with_capacity` does.
fn reserve<T>(name: &str, n: u64, size: u64) -> Result<Vec<T>> {
    let oom = || {
        Error::Package(format!(
            "tensor `{name}`: cannot allocate {} bytes for its values; close other tabs or \
             use a smaller package",
            n.saturating_mul(size)
        ))
    };
    let n = usize::try_from(n).map_err(|_| oom())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom())?;
    Ok(v)
}

fn f16_le(b: &[u8]) -> f16 {
    f16::from_le_bytes([
        b.first().copied().unwrap_or(0),
        b.get(1).copied().unwrap_or(0),
    ])
}

fn u32_le(b: &[u8]) -> u32 {
    let byte = |i: usize| b.get(i).copied().unwrap_or(0);
    u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)])
}

impl TensorDecoder {
    /// Reserve the arrays of `entry` (whose size [`super::Manifest::validate`] has bounded).
    pub fn new(entry: &TensorEntry) -> Result<Self> {
        let name = entry.name.as_str();
        let bad_shape = || Error::Package(format!("tensor `{name}`: bad shape {:?}", entry.shape));
        let length = entry
            .encoding
            .byte_length(&entry.shape)
            .ok_or_else(bad_shape)?;
        if length != entry.length {
            // `validate` checked this; the segment arithmetic below relies on it.
            return Err(Error::Package(format!(
                "tensor `{name}`: length is {} bytes but its shape needs {length}",
                entry.length
            )));
        }
        let values = match entry.encoding {
            Encoding::Dtype(FloatDtype::F16) => Values::F16(reserve(name, length / 2, 2)?),
            Encoding::Dtype(FloatDtype::F32) => Values::F32(reserve(name, length / 4, 4)?),
            Encoding::Quant(q) => {
                let sizes = Encoding::packed_sizes(&q, &entry.shape).ok_or_else(bad_shape)?;
                Values::Packed {
                    sizes,
                    words: reserve(name, sizes.words / 4, 4)?,
                    scales: reserve(name, sizes.scales / 2, 2)?,
                    zeros: reserve(name, sizes.zeros / 2, 2)?,
                }
            }
        };
        Ok(Self {
            entry: entry.clone(),
            values,
            received: 0,
            carry: [0; 4],
            carry_len: 0,
        })
    }

    /// Bytes of the tensor received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The element size and the end (in tensor bytes) of the array byte `at` falls in.
    fn segment(&self, at: u64) -> (usize, u64) {
        match &self.values {
            Values::F16(_) => (2, self.entry.length),
            Values::F32(_) => (4, self.entry.length),
            Values::Packed { sizes, .. } => {
                let scales_end = sizes.words.saturating_add(sizes.scales);
                if at < sizes.words {
                    (4, sizes.words)
                } else if at < scales_end {
                    (2, scales_end)
                } else {
                    (2, scales_end.saturating_add(sizes.zeros))
                }
            }
        }
    }

    /// Append whole elements (`bytes` is a multiple of the element size) to the array that
    /// tensor byte `at` falls in.
    fn append(&mut self, at: u64, bytes: &[u8]) {
        match &mut self.values {
            Values::F16(v) => v.extend(bytes.chunks_exact(2).map(f16_le)),
            Values::F32(v) => v.extend(bytes.chunks_exact(4).map(|c| f32::from_bits(u32_le(c)))),
            Values::Packed {
                sizes,
                words,
                scales,
                zeros,
            } => {
                if at < sizes.words {
                    words.extend(bytes.chunks_exact(4).map(u32_le));
                } else if at < sizes.words.saturating_add(sizes.scales) {
                    scales.extend(bytes.chunks_exact(2).map(f16_le));
                } else {
                    zeros.extend(bytes.chunks_exact(2).map(f16_le));
                }
            }
        }
    }

    /// Decode the next bytes of the tensor. Bytes past its length are an error (the stream
    /// reader never passes them; this guards the arrays' reserved sizes).
    pub fn push(&mut self, mut data: &[u8]) -> Result<()> {
        let total = self.received.saturating_add(data.len() as u64);
        if total > self.entry.length {
            return Err(Error::Package(format!(
                "tensor `{}`: got {total} bytes, the manifest's shape needs {}",
                self.entry.name, self.entry.length
            )));
        }
        while !data.is_empty() {
            // Where the element being completed (or the next one) starts.
            let start = self.received - self.carry_len as u64;
            let (elem, seg_end) = self.segment(start);
            let n = if self.carry_len > 0 {
                let n = (elem - self.carry_len).min(data.len());
                let dst = self.carry.get_mut(self.carry_len..self.carry_len + n);
                if let (Some(dst), Some(src)) = (dst, data.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.carry_len += n;
                if self.carry_len == elem {
                    let whole = self.carry;
                    self.append(start, whole.get(..elem).unwrap_or_default());
                    self.carry_len = 0;
                }
                n
            } else {
                let room = usize::try_from(seg_end.saturating_sub(start)).unwrap_or(usize::MAX);
                let avail = room.min(data.len());
                if avail == 0 {
                    // Cannot happen for a validated entry (every array is whole elements and
                    // `total` stays within the length); refusing keeps the loop finite.
                    return Err(Error::Package(format!(
                        "tensor `{}`: byte {start} lies in no array of its layout",
                        self.entry.name
                    )));
                }
                let whole = avail - avail % elem;
                if whole > 0 {
                    self.append(start, data.get(..whole).unwrap_or_default());
                    whole
                } else {
                    // Less than one element in this piece: keep it for the next.
                    if let (Some(dst), Some(src)) = (self.carry.get_mut(..avail), data.get(..avail))
                    {
                        dst.copy_from_slice(src);
                    }
                    self.carry_len = avail;
                    avail
                }
            };
            self.received += n as u64;
            data = data.get(n..).unwrap_or_default();
        }
        Ok(())
    }

    /// The decoded tensor, once every byte was pushed.
    pub fn finish(self) -> Result<LoadedTensor> {
        let entry = self.entry;
        let name = entry.name.as_str();
        if self.received != entry.length || self.carry_len != 0 {
            return Err(Error::Package(format!(
                "tensor `{name}`: got {} bytes, the manifest's shape needs {}",
                self.received, entry.length
            )));
        }
        let data = match self.values {
            Values::F16(v) => TensorData::F16(v),
            Values::F32(v) => TensorData::F32(v),
            Values::Packed {
                words,
                scales,
                zeros,
                ..
            } => {
                let (Encoding::Quant(q), [rows, cols]) = (entry.encoding, &entry.shape[..]) else {
                    return Err(Error::Package(format!("tensor `{name}`: bad packed shape")));
                };
                let p = PackedTensor {
                    spec: QuantSpec {
                        bits: q.bits,
                        group: q.group,
                    },
                    method: q.method,
                    rows: *rows,
                    cols: *cols,
                    words,
                    scales,
                    zeros,
                };
                p.validate()
                    .map_err(|e| Error::Package(format!("tensor `{name}`: {e}")))?;
                TensorData::Packed(p)
            }
        };
        Ok(LoadedTensor {
            name: entry.name,
            shape: entry.shape,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::codec::PackageTensor;
    use crate::quant::{rtn, QuantSpec};

    fn entry(name: &str, t: &PackageTensor) -> TensorEntry {
        let shape = t.shape();
        TensorEntry {
            name: name.into(),
            length: t.encoding().byte_length(&shape).unwrap_or(0),
            shape,
            encoding: t.encoding(),
            shard: 0,
            offset: 0,
            sha256: String::new(),
        }
    }

    fn decode_in(e: &TensorEntry, bytes: &[u8], cuts: &[usize]) -> LoadedTensor {
        let mut d = TensorDecoder::new(e).unwrap();
        let mut from = 0;
        for &c in cuts.iter().chain([bytes.len()].iter()) {
            d.push(&bytes[from..c]).unwrap();
            from = c;
        }
        d.finish().unwrap()
    }

    fn samples() -> Vec<PackageTensor> {
        let w: Vec<f32> = (0..4 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = rtn::quantize("p", &w, 4, 64, QuantSpec::new(3, 32).unwrap()).unwrap();
        vec![
            PackageTensor::Float {
                shape: vec![7],
                data: w.iter().take(7).map(|&v| f16::from_f32(v)).collect(),
            },
            PackageTensor::Float32 {
                shape: vec![3, 3],
                data: w[..9].to_vec(),
            },
            PackageTensor::Packed(p),
        ]
    }

    /// Every cut point, and a byte at a time, gives the values one push gives: elements cut
    /// in two, and the words/scales/zeros boundaries of a packed tensor, are carried across.
    #[test]
    fn any_split_decodes_to_the_same_values() {
        for t in samples() {
            let e = entry("t", &t);
            let bytes = t.to_bytes("t").unwrap();
            let whole = decode_in(&e, &bytes, &[]);
            let want = match t {
                PackageTensor::Float { data, .. } => TensorData::F16(data),
                PackageTensor::Float32 { data, .. } => TensorData::F32(data),
                PackageTensor::Packed(p) => TensorData::Packed(p),
            };
            assert_eq!(whole.data, want);
            for cut in 0..=bytes.len() {
                assert_eq!(decode_in(&e, &bytes, &[cut]), whole, "cut at {cut}");
            }
            let every: Vec<usize> = (1..bytes.len()).collect();
            assert_eq!(decode_in(&e, &bytes, &every), whole);
        }
    }

    #[test]
    fn too_many_or_too_few_bytes_are_errors() {
        let t = &samples()[1];
        let e = entry("t", t);
        let bytes = t.to_bytes("t").unwrap();
        let mut d = TensorDecoder::new(&e).unwrap();
        d.push(&bytes[..bytes.len() - 1]).unwrap();
        assert!(d.push(&[0, 0]).is_err());
        assert!(d.finish().is_err());
    }
}
