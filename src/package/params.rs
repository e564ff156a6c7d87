//! Model parameters from a package's decoded tensors: float tensors upload as dense, packed
//! ones as the backend's packed weight, and a tensor the architecture never asked for is an
//! error (a package for another model must not load half-silently).

use std::collections::{BTreeMap, BTreeSet};

use super::{LoadedTensor, TensorData};
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::linear::Weight;
use crate::model::params::{Init, Params};

pub struct PackageParams<B: Backend> {
    backend: B,
    tensors: BTreeMap<String, LoadedTensor>,
    used: BTreeSet<String>,
}

impl<B: Backend> PackageParams<B> {
    pub fn new(backend: B, tensors: impl IntoIterator<Item = LoadedTensor>) -> Self {
        Self {
            backend,
            tensors: tensors.into_iter().map(|t| (t.name.clone(), t)).collect(),
            used: BTreeSet::new(),
        }
    }

    /// Call after the model is built: every tensor of the package must have been used.
    pub fn check_all_used(&self) -> Result<()> {
        let unknown: Vec<&String> = self
            .tensors
            .keys()
            .filter(|n| !self.used.contains(*n))
            .collect();
        match unknown.first() {
            None => Ok(()),
            Some(first) => Err(Error::Package(format!(
                "tensor `{first}` (and {} more) is not part of this architecture; \
                 the package was made for a different model",
                unknown.len() - 1
            ))),
        }
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<&LoadedTensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        if t.shape != shape {
            return Err(Error::TensorShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        self.used.insert(name.to_string());
        Ok(t)
    }
}

impl<B: Backend> Params<B> for PackageParams<B> {
    fn backend(&self) -> &B {
        &self.backend
    }

    fn tensor(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<B::Tensor> {
        let t = self.take(name, shape)?;
        let data = match &t.data {
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::F32(v) => v.clone(),
            TensorData::Packed(_) => {
                return Err(Error::Package(format!(
                    "tensor `{name}` is packed, but the model needs it as a float tensor \
                     (only linear weights may be quantized)"
                )))
            }
        };
        let host = HostTensor::new(shape.to_vec(), data)?;
        self.backend.upload(&host)
    }

    fn weight(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Weight<B>> {
        let host = match &self.take(name, shape)?.data {
            TensorData::Packed(p) => {
                let p = p.clone();
                return Ok(Weight::Packed(self.backend.upload_packed(&p)?));
            }
            TensorData::F16(v) => {
                HostTensor::new(shape.to_vec(), v.iter().map(|x| x.to_f32()).collect())?
            }
            TensorData::F32(_) => return Ok(Weight::Dense(self.tensor(name, shape, init)?)),
        };
        Ok(Weight::Dense(self.backend.upload_half_weight(&host)?))
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
