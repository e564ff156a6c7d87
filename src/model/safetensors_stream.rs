//! A `model.safetensors` read as its bytes arrive (the page's `fetch` body), so that a
//! checkpoint folder loads like a package: the header is parsed and validated by the
//! `safetensors` crate once its bytes are in, then each tensor is decoded the moment its last
//! byte arrives and handed to the caller (a [`crate::model::weights::WeightSink`]: on the
//! backend at once). The tab never holds the file whole; before, a folder's whole file sat in
//! wasm memory next to the model built from it (1.3 GiB for the 435 MiB SmolVLM-256M f16
//! folder on the CPU).
//!
//! Bytes are copied straight into each tensor's final array, reserved once, so a tensor is
//! never held twice. bf16 has no exact f16 form, so it is widened to f32 as
//! [`crate::model::params::SafetensorsParams`] does, byte by byte on arrival (a bf16 value is
//! the high half of its f32): a real Qwen2-VL-2B embedding then needs its f32 size (934 MB),
//! not that plus its bf16 copy.

use std::collections::VecDeque;

use half::f16;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::package::{LoadedTensor, TensorData};

/// The safetensors crate's limit on the JSON header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor being filled.
struct Pending {
    name: String,
    shape: Vec<usize>,
    values: Values,
    /// Bytes received.
    filled: usize,
}

enum Values {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// bf16 values, already widened.
    Bf16(Vec<f32>),
}

impl Values {
    /// The tensor's size in the file.
    fn file_bytes(&self) -> usize {
        match self {
            Values::F16(v) => 2 * v.len(),
            Values::F32(v) => 4 * v.len(),
            Values::Bf16(v) => 2 * v.len(),
        }
    }

    /// Write `src`, the file's bytes from tensor byte `at` on.
    fn write(&mut self, at: usize, src: &[u8]) {
        let copy = |dst: &mut [u8]| {
            if let Some(d) = dst.get_mut(at..at + src.len()) {
                d.copy_from_slice(src);
            }
        };
        match self {
            Values::F16(v) => copy(bytemuck::cast_slice_mut(v)),
            Values::F32(v) => copy(bytemuck::cast_slice_mut(v)),
            Values::Bf16(v) => {
                // bf16 byte k is byte 2 + k % 2 of little-endian f32 number k / 2; the low
                // two bytes stay zero.
                let dst: &mut [u8] = bytemuck::cast_slice_mut(v);
                for (k, b) in (at..).zip(src) {
                    if let Some(d) = dst.get_mut(4 * (k / 2) + 2 + k % 2) {
                        *d = *b;
                    }
                }
            }
        }
    }
}

/// `n` zeroed values, or a typed error when the tab (or machine) has no room for them rather
/// than the abort a failed allocation is.
fn zeroed<T: Clone + Default>(file: &str, name: &str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::WeightsFile {
        file: file.into(),
        msg: format!(
            "tensor `{name}`: cannot allocate {} bytes; close other tabs or use a quantized package",
            n.saturating_mul(std::mem::size_of::<T>())
        ),
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// The state of one file being received.
pub struct SafetensorsStream {
    file: String,
    /// The 8 length bytes, then the JSON header, until it is parsed.
    head: Vec<u8>,
    /// Tensors not yet complete, in file order, once the header is parsed.
    queue: Option<VecDeque<(String, TensorInfo)>>,
    names: Vec<String>,
    current: Option<Pending>,
    data_len: u64,
    received: u64,
}

impl SafetensorsStream {
    /// `file` names the file in messages.
    pub fn new(file: &str) -> Self {
        Self {
            file: file.into(),
            head: Vec::new(),
            queue: None,
            names: Vec::new(),
            current: None,
            data_len: 0,
            received: 0,
        }
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::WeightsFile {
            file: self.file.clone(),
            msg: msg.into(),
        }
    }

    /// The tensor names (file order) once the header has arrived; `None` before.
    pub fn names(&self) -> Option<&[String]> {
        self.queue.as_ref().map(|_| self.names.as_slice())
    }

    /// Bytes of tensor data received, and how many the header describes (0 before it).
    pub fn progress(&self) -> (u64, u64) {
        (self.received, self.data_len)
    }

    /// Feed the next bytes. While the header is incomplete only its bytes are taken, so the
    /// caller can look at [`SafetensorsStream::names`] before any tensor is delivered: returns
    /// how many bytes of `chunk` were used (call again with the rest). Each tensor completed
    /// by these bytes goes to `on_tensor`.
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut on_tensor: impl FnMut(LoadedTensor) -> Result<()>,
    ) -> Result<usize> {
        if self.queue.is_none() {
            // Tensors of no bytes at the start complete with the next push's first byte.
            return self.push_header(chunk);
        }
        let mut data = chunk;
        while !data.is_empty() {
            if self.current.is_none() {
                self.start_next()?;
            }
            let Some(p) = self.current.as_mut() else {
                return Err(self.err(format!(
                    "{} bytes more than the header's {} bytes of tensor data",
                    data.len(),
                    self.data_len
                )));
            };
            let len = p.values.file_bytes();
            let n = (len - p.filled).min(data.len());
            p.values.write(p.filled, data.get(..n).unwrap_or_default());
            p.filled += n;
            let complete = p.filled == len;
            self.received += n as u64;
            data = data.get(n..).unwrap_or_default();
            if complete {
                if let Some(p) = self.current.take() {
                    on_tensor(finish(p))?;
                }
                self.deliver_empty(&mut on_tensor)?;
            }
        }
        Ok(chunk.len())
    }

    /// Tensors of no bytes next in the file complete at once.
    fn deliver_empty(
        &mut self,
        on_tensor: &mut impl FnMut(LoadedTensor) -> Result<()>,
    ) -> Result<()> {
        while self.current.is_none()
            && self
                .queue
                .as_ref()
                .and_then(VecDeque::front)
                .is_some_and(|(_, info)| info.shape.contains(&0))
        {
            self.start_next()?;
            if let Some(p) = self.current.take() {
                on_tensor(finish(p))?;
            }
        }
        Ok(())
    }

    /// Header bytes only: returns how many of `chunk` it took.
    fn push_header(&mut self, chunk: &[u8]) -> Result<usize> {
        let mut used = 0;
        if self.head.len() < 8 {
            used = (8 - self.head.len()).min(chunk.len());
            self.head
                .extend_from_slice(chunk.get(..used).unwrap_or_default());
            if self.head.len() < 8 {
                return Ok(used);
            }
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(self.head.get(..8).unwrap_or(&[0; 8]));
        let n = u64::from_le_bytes(len);
        if n == 0 || n > MAX_HEADER_BYTES {
            return Err(self.err(format!(
                "header length {n} is not between 1 and {MAX_HEADER_BYTES} bytes; is this a \
                 safetensors file?"
            )));
        }
        let total = 8 + n as usize;
        let take = (total - self.head.len()).min(chunk.len() - used);
        self.head
            .extend_from_slice(chunk.get(used..used + take).unwrap_or_default());
        used += take;
        if self.head.len() == total {
            self.parse_header()?;
        }
        Ok(used)
    }

    fn parse_header(&mut self) -> Result<()> {
        let json = self.head.get(8..).unwrap_or_default();
        // `Metadata`'s deserializer validates the offsets: contiguous from 0, each the size
        // its dtype and shape need.
        let meta: Metadata =
            serde_json::from_slice(json).map_err(|e| self.err(format!("bad header: {e}")))?;
        let mut queue = VecDeque::new();
        for name in meta.offset_keys() {
            let Some(info) = meta.info(&name) else {
                continue;
            };
            queue.push_back((name.clone(), info.clone()));
            self.names.push(name);
        }
        self.data_len = meta.data_len() as u64;
        self.queue = Some(queue);
        self.head = Vec::new();
        Ok(())
    }

    fn start_next(&mut self) -> Result<()> {
        let Some((name, info)) = self.queue.as_mut().and_then(VecDeque::pop_front) else {
            return Ok(());
        };
        let n: usize = info.shape.iter().product();
        let values = match info.dtype {
            Dtype::F16 => Values::F16(zeroed(&self.file, &name, n)?),
            Dtype::F32 => Values::F32(zeroed(&self.file, &name, n)?),
            Dtype::BF16 => Values::Bf16(zeroed(&self.file, &name, n)?),
            other => {
                return Err(Error::TensorDtype {
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        self.current = Some(Pending {
            name,
            shape: info.shape,
            values,
            filled: 0,
        });
        Ok(())
    }

    /// Every byte arrived: refuses a file cut short.
    pub fn finish(self) -> Result<()> {
        if self.queue.is_none() {
            return Err(self.err("the file ended inside its header"));
        }
        let left = self.queue.as_ref().map_or(0, VecDeque::len);
        if self.received != self.data_len || self.current.is_some() || left > 0 {
            return Err(self.err(format!(
                "the file ended after {} of its {} bytes of tensor data{}",
                self.received,
                self.data_len,
                self.current
                    .as_ref()
                    .map(|p| format!(", inside tensor `{}`", p.name))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }
}

fn finish(p: Pending) -> LoadedTensor {
    let data = match p.values {
        Values::F16(v) => TensorData::F16(v),
        Values::F32(v) => TensorData::F32(v),
        Values::Bf16(v) => TensorData::F32(v),
    };
    LoadedTensor {
        name: p.name,
        shape: p.shape,
        data,
    }
}
