//! Weights that reach the backend one tensor at a time, before the model exists.
//!
//! The web page streams a package shard by shard; to keep the whole file out of wasm memory,
//! each tensor must go to the backend (GPU buffers, or the CPU backend's tensors) as soon as
//! its bytes are verified, and its host copy must be dropped. But the form a tensor takes on
//! the backend depends on how the model uses it: a linear layer's f16 weight stays f16 on
//! wgpu ([`Backend::upload_half_weight`]), an embedding table or a norm is f32. So the model
//! definition is asked first, without any weights, what it will request ([`ParamPlan`]), and
//! the model is built at the end from the uploaded weights through the same [`Params`]
//! interface as every other source ([`UploadedParams`]). There is one model definition per
//! architecture and one loading path for all of them: both are generic over
//! [`ModelDefinition`] (`Idefics3::load`, `Qwen2Vl::load`), and default to Idefics3, which the
//! web page runs.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::definition::ModelDefinition;
use crate::model::generate::Vqa;
use crate::model::idefics3::Idefics3Config;
use crate::model::linear::Weight;
use crate::model::params::{Init, Params};
use crate::model::tokenizer::VqaTokenizer;
use crate::package::{LoadedTensor, TensorData};

/// How the model asks for one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedParam {
    pub shape: Vec<usize>,
    /// Asked with [`Params::weight`] (a linear layer's weight: may be packed or kept in
    /// half precision) rather than [`Params::tensor`] (always f32 on the backend).
    pub linear: bool,
}

/// Every parameter the model definition asks for, by name: what its `load` requests of its
/// [`Params`], recorded by running it against shapes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamPlan {
    params: BTreeMap<String, PlannedParam>,
}

/// A [`Params`] that hands out zero-stride CPU tensors (one f32 each, whatever the shape) and
/// records what was asked: running the model's own `load` against it costs no weight memory.
struct PlanParams<'a> {
    backend: CpuBackend,
    present: &'a dyn Fn(&str) -> bool,
    seen: BTreeMap<String, PlannedParam>,
}

impl PlanParams<'_> {
    fn record(&mut self, name: &str, shape: &[usize], linear: bool) -> Result<Tensor> {
        let p = PlannedParam {
            shape: shape.to_vec(),
            linear,
        };
        match self.seen.get(name) {
            Some(old) if *old != p => {
                return Err(Error::Invalid(format!(
                    "the model asks for `{name}` twice, as {old:?} and as {p:?}"
                )))
            }
            _ => {}
        }
        self.seen.insert(name.to_string(), p);
        Tensor::zeros((), DType::F32, &Device::Cpu)
            .and_then(|t| t.broadcast_as(shape))
            .map_err(|e| Error::Invalid(format!("planning `{name}` {shape:?}: {e}")))
    }
}

impl Params<CpuBackend> for PlanParams<'_> {
    fn backend(&self) -> &CpuBackend {
        &self.backend
    }

    fn tensor(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor> {
        self.record(name, shape, false)
    }

    fn weight(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Weight<CpuBackend>> {
        Ok(Weight::Dense(self.record(name, shape, true)?))
    }

    fn contains(&self, name: &str) -> bool {
        (self.present)(name)
    }
}

impl ParamPlan {
    /// What the model of `cfg` asks for when its source holds the tensors `present` says it
    /// holds (an untied `lm_head` is optional).
    pub fn for_model<M: ModelDefinition>(cfg: &M, present: &dyn Fn(&str) -> bool) -> Result<Self> {
        let mut p = PlanParams {
            backend: CpuBackend::new(),
            present,
            seen: BTreeMap::new(),
        };
        cfg.load::<CpuBackend>(&mut p)?;
        Ok(Self { params: p.seen })
    }

    /// Every planned parameter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PlannedParam)> {
        self.params.iter().map(|(n, p)| (n.as_str(), p))
    }

    pub fn get(&self, name: &str) -> Option<&PlannedParam> {
        self.params.get(name)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

/// A parameter already on the backend, in the form the plan says the model wants.
enum Uploaded<B: Backend> {
    Tensor(B::Tensor),
    Weight(Weight<B>),
}

/// Receives verified tensors one at a time and puts each on the backend at once, checked
/// against the plan (a tensor the model never asks for, or of another shape, is refused
/// before it is uploaded). Nothing of a tensor stays on the host once it was accepted.
pub struct WeightSink<B: Backend, M: ModelDefinition = Idefics3Config> {
    backend: B,
    cfg: M,
    plan: ParamPlan,
    uploaded: BTreeMap<String, Uploaded<B>>,
    /// Bytes the accepted tensors had on the host (their package encoding), for progress.
    host_bytes: u64,
}

fn host_f32(name: &str, shape: &[usize], data: TensorData) -> Result<HostTensor> {
    let values = match data {
        TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        TensorData::F32(v) => v,
        TensorData::Packed(_) => {
            return Err(Error::Package(format!(
                "tensor `{name}` is packed, but the model needs it as a float tensor \
                 (only linear weights may be quantized)"
            )))
        }
    };
    HostTensor::new(shape.to_vec(), values)
}

fn data_bytes(d: &TensorData) -> u64 {
    match d {
        TensorData::F16(v) => 2 * v.len() as u64,
        TensorData::F32(v) => 4 * v.len() as u64,
        TensorData::Packed(p) => p.nbytes() as u64,
    }
}

impl<B: Backend, M: ModelDefinition> WeightSink<B, M> {
    /// A sink for the model of `cfg` whose source holds the tensors `present` says it holds.
    pub fn for_model(backend: B, cfg: &M, present: &dyn Fn(&str) -> bool) -> Result<Self> {
        Ok(Self {
            backend,
            plan: ParamPlan::for_model(cfg, present)?,
            cfg: cfg.clone(),
            uploaded: BTreeMap::new(),
            host_bytes: 0,
        })
    }

    pub fn config(&self) -> &M {
        &self.cfg
    }

    /// Whether the model asks for tensor `name` (a checkpoint may hold others it ignores).
    pub fn wants(&self, name: &str) -> bool {
        self.plan.get(name).is_some()
    }

    /// Tensors the model asks for.
    pub fn expected(&self) -> usize {
        self.plan.len()
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Tensors on the backend so far.
    pub fn uploaded(&self) -> usize {
        self.uploaded.len()
    }

    /// Their bytes as the package encoded them.
    pub fn uploaded_bytes(&self) -> u64 {
        self.host_bytes
    }

    /// Put `t` on the backend in the form the model will ask for, consuming its host copy.
    pub fn accept(&mut self, t: LoadedTensor) -> Result<()> {
        let LoadedTensor { name, shape, data } = t;
        let Some(planned) = self.plan.get(&name) else {
            return Err(Error::Package(format!(
                "tensor `{name}` is not part of this architecture; the package was made for \
                 a different model"
            )));
        };
        if planned.shape != shape {
            return Err(Error::TensorShape {
                name,
                expected: planned.shape.clone(),
                found: shape,
            });
        }
        if self.uploaded.contains_key(&name) {
            return Err(Error::Package(format!(
                "tensor `{name}` arrived twice; the package lists it more than once"
            )));
        }
        let bytes = data_bytes(&data);
        let up = match (planned.linear, data) {
            (true, TensorData::Packed(p)) => {
                Uploaded::Weight(Weight::Packed(self.backend.upload_packed(&p)?))
            }
            (true, TensorData::F16(v)) => {
                Uploaded::Weight(Weight::Dense(self.backend.upload_f16(&shape, &v, true)?))
            }
            (false, TensorData::F16(v)) => {
                Uploaded::Tensor(self.backend.upload_f16(&shape, &v, false)?)
            }
            (linear, data) => {
                let t = self.backend.upload(&host_f32(&name, &shape, data)?)?;
                if linear {
                    Uploaded::Weight(Weight::Dense(t))
                } else {
                    Uploaded::Tensor(t)
                }
            }
        };
        self.host_bytes += bytes;
        self.uploaded.insert(name, up);
        Ok(())
    }

    /// The model, from the uploaded weights: its definition asks for each by name, exactly
    /// as it asks a checkpoint. Every planned tensor must have arrived (the first missing one
    /// is named). Also returns the backend.
    pub fn assemble_model(self) -> Result<(B, M::Model<B>)> {
        let mut params = UploadedParams {
            backend: self.backend.clone(),
            uploaded: self.uploaded,
        };
        let model = self.cfg.load::<B>(&mut params)?;
        Ok((self.backend, model))
    }
}

impl<B: Backend> WeightSink<B, Idefics3Config> {
    /// [`WeightSink::assemble_model`] ready to answer with `tok`.
    pub fn assemble(self, tok: VqaTokenizer) -> Result<Vqa<B>> {
        let (backend, model) = self.assemble_model()?;
        Ok(Vqa::new(backend, model, tok))
    }
}

/// [`Params`] over weights already on the backend.
struct UploadedParams<B: Backend> {
    backend: B,
    uploaded: BTreeMap<String, Uploaded<B>>,
}

impl<B: Backend> UploadedParams<B> {
    fn get(&self, name: &str) -> Result<&Uploaded<B>> {
        self.uploaded
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })
    }
}

impl<B: Backend> Params<B> for UploadedParams<B> {
    fn backend(&self) -> &B {
        &self.backend
    }

    fn tensor(&mut self, name: &str, _shape: &[usize], _init: Init) -> Result<B::Tensor> {
        match self.get(name)? {
            Uploaded::Tensor(t) => Ok(t.clone()),
            Uploaded::Weight(_) => Err(Error::Invalid(format!(
                "`{name}` was uploaded as a linear weight but is asked for as a tensor; the \
                 plan and the model disagree"
            ))),
        }
    }

    fn weight(&mut self, name: &str, _shape: &[usize], _init: Init) -> Result<Weight<B>> {
        match self.get(name)? {
            Uploaded::Weight(w) => Ok(w.clone()),
            Uploaded::Tensor(t) => Ok(Weight::Dense(t.clone())),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.uploaded.contains_key(name)
    }
}
