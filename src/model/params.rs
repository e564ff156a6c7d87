//! Where a model's parameters come from.
//!
//! The model definition asks for each parameter by its Hugging Face name and shape; a
//! [`Params`] implementation answers from a checkpoint ([`SafetensorsParams`]) or creates fresh
//! trainable variables (`crate::train`). This is what lets one definition serve loading,
//! training and, later, packed quantized weights.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};

use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::linear::Weight;

/// How a freshly created parameter is initialised (ignored when loading).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal(f32),
    Zeros,
    Ones,
}

pub trait Params<B: Backend> {
    fn backend(&self) -> &B;
    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<B::Tensor>;
    /// A linear layer's weight: dense unless the source holds it packed (a quantized package).
    fn weight(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Weight<B>> {
        Ok(Weight::Dense(self.tensor(name, shape, init)?))
    }
    /// Whether the source has this tensor (for optional ones such as an untied `lm_head`).
    fn contains(&self, name: &str) -> bool;
}

/// Decode a float tensor from safetensors bytes to f32, checking its shape against `expected`.
pub fn host_tensor_from_view(
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
    expected: &[usize],
) -> Result<HostTensor> {
    if view.shape() != expected {
        return Err(Error::TensorShape {
            name: name.into(),
            expected: expected.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::TensorDtype {
                name: name.into(),
                dtype: format!("{other:?}"),
            })
        }
    };
    HostTensor::new(expected.to_vec(), data)
}

/// Parameters read from one safetensors file held in memory.
pub struct SafetensorsParams<'a, B: Backend> {
    backend: B,
    file: String,
    st: SafeTensors<'a>,
    names: HashMap<String, ()>,
}

impl<'a, B: Backend> SafetensorsParams<'a, B> {
    /// `file` is only used in messages. The safetensors crate checks the header and that every
    /// offset lies inside `bytes`, so a truncated file is rejected here, before any tensor is read.
    pub fn new(backend: B, file: &str, bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::WeightsFile {
            file: file.into(),
            msg: e.to_string(),
        })?;
        let names = st
            .names()
            .into_iter()
            .map(|n| (n.to_string(), ()))
            .collect();
        Ok(Self {
            backend,
            file: file.into(),
            st,
            names,
        })
    }

    pub fn file(&self) -> &str {
        &self.file
    }
}

impl<B: Backend> SafetensorsParams<'_, B> {
    /// Tensor `name` decoded to f32 on the host, its shape checked against `shape` (what a
    /// load-time quantizer starts from).
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let view = self
            .st
            .tensor(name)
            .map_err(|_| Error::MissingTensor { name: name.into() })?;
        host_tensor_from_view(name, &view, shape)
    }
}

impl<B: Backend> Params<B> for SafetensorsParams<'_, B> {
    fn backend(&self) -> &B {
        &self.backend
    }

    fn tensor(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<B::Tensor> {
        let host = self.host(name, shape)?;
        self.backend.upload(&host)
    }

    fn weight(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Weight<B>> {
        match self.st.tensor(name) {
            Ok(view) if view.dtype() == Dtype::F16 => {
                let host = host_tensor_from_view(name, &view, shape)?;
                Ok(Weight::Dense(self.backend.upload_half_weight(&host)?))
            }
            _ => Ok(Weight::Dense(self.tensor(name, shape, init)?)),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
}
