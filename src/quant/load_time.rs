//! Quantizing an f16 checkpoint at load time, in memory: what the web page does when asked for
//! a bit width it has no package for. HQQ only, because it is data-free (no calibration images
//! need to reach the browser) and fast; MBQ needs gradients on calibration data and stays in
//! `relvqa quantize`. The result is exactly what `relvqa quantize --method hqq` would write (a
//! test checks the logits are bit-identical), handed to the backend tensor by tensor
//! ([`hqq_sink`]) without the package's byte format in between.

use std::collections::{BTreeMap, BTreeSet};

use half::f16;
use safetensors::SafeTensors;

use super::hqq::{self, HqqOptions};
use super::spec::QuantSpec;
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::idefics3::Idefics3Config;
use crate::model::params::host_tensor_from_view;
use crate::model::weights::WeightSink;
use crate::package::{LoadedTensor, TensorData};

/// Every tensor of a safetensors file, decoded to f32 on the host, by name.
pub fn host_weights(bytes: &[u8], file: &str) -> Result<BTreeMap<String, HostTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::WeightsFile {
        file: file.into(),
        msg: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        out.insert(name.clone(), host_tensor_from_view(&name, &view, &shape)?);
    }
    Ok(out)
}

/// Prefixes of the linears a method quantizes: the decoder's attention and MLP projections,
/// plus the vision tower's when asked. lm_head, embeddings, the connector and norms stay f16.
pub fn quantized_linears(cfg: &Idefics3Config, vision: bool) -> Vec<String> {
    let mut out = Vec::new();
    for l in 0..cfg.text_config.num_hidden_layers {
        let p = format!("model.text_model.layers.{l}");
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            out.push(format!("{p}.self_attn.{n}"));
        }
        for n in ["gate_proj", "up_proj", "down_proj"] {
            out.push(format!("{p}.mlp.{n}"));
        }
    }
    if vision {
        for l in 0..cfg.vision_config.num_hidden_layers {
            let p = format!("model.vision_model.encoder.layers.{l}");
            for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                out.push(format!("{p}.self_attn.{n}"));
            }
            for n in ["fc1", "fc2"] {
                out.push(format!("{p}.mlp.{n}"));
            }
        }
    }
    out
}

/// The language model's linears of `weights` (a safetensors file) quantized with HQQ to
/// `spec`, everything else as f16: the tensors of an HQQ package, handed to `on_tensor` one
/// at a time (the quantized linears first, then the rest by name) so that a caller can put
/// each on the backend before the next is decoded. `progress(done, total)` is called after
/// each quantized layer.
pub fn for_each_hqq_tensor(
    cfg: &Idefics3Config,
    weights: &[u8],
    spec: QuantSpec,
    o: &HqqOptions,
    mut progress: impl FnMut(usize, usize),
    mut on_tensor: impl FnMut(LoadedTensor) -> Result<()>,
) -> Result<()> {
    spec.validate()?;
    let st = SafeTensors::deserialize(weights).map_err(|e| Error::WeightsFile {
        file: "model.safetensors".into(),
        msg: e.to_string(),
    })?;
    let targets: Vec<String> = quantized_linears(cfg, false)
        .into_iter()
        .map(|t| format!("{t}.weight"))
        .collect();
    let decode = |name: &str| {
        let view = st
            .tensor(name)
            .map_err(|_| Error::MissingTensor { name: name.into() })?;
        let shape = view.shape().to_vec();
        host_tensor_from_view(name, &view, &shape)
    };
    for (i, name) in targets.iter().enumerate() {
        let t = decode(name)?;
        let (rows, cols) = match t.shape.as_slice() {
            [r, c] => (*r, *c),
            other => {
                return Err(Error::TensorShape {
                    name: name.clone(),
                    expected: vec![0, 0],
                    found: other.to_vec(),
                })
            }
        };
        spec.check_k(name, cols)?;
        let p = hqq::quantize(name, &t.data, rows, cols, spec, o)?;
        on_tensor(LoadedTensor {
            name: name.clone(),
            shape: t.shape,
            data: TensorData::Packed(p),
        })?;
        progress(i + 1, targets.len());
    }
    let mut rest: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !targets.iter().any(|t| t == n))
        .map(str::to_owned)
        .collect();
    rest.sort();
    for name in rest {
        let t = decode(&name)?;
        on_tensor(LoadedTensor {
            name,
            shape: t.shape,
            data: TensorData::F16(t.data.iter().map(|&v| f16::from_f32(v)).collect()),
        })?;
    }
    Ok(())
}

/// [`for_each_hqq_tensor`] collected: every tensor of the HQQ package in memory at once.
pub fn hqq_tensors(
    cfg: &Idefics3Config,
    weights: &[u8],
    spec: QuantSpec,
    o: &HqqOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<LoadedTensor>> {
    let mut out = Vec::new();
    for_each_hqq_tensor(cfg, weights, spec, o, progress, |t| {
        out.push(t);
        Ok(())
    })?;
    Ok(out)
}

/// The HQQ model of `weights` straight onto `backend`: each linear is quantized and uploaded,
/// then its host copy dropped, before the next is decoded, so the tab never holds the whole
/// quantized model on the host. Build the model with
/// [`crate::model::loader::load_from_sink`].
pub fn hqq_sink<B: Backend>(
    backend: B,
    cfg: &Idefics3Config,
    weights: &[u8],
    spec: QuantSpec,
    o: &HqqOptions,
    progress: impl FnMut(usize, usize),
) -> Result<WeightSink<B>> {
    let st = SafeTensors::deserialize(weights).map_err(|e| Error::WeightsFile {
        file: "model.safetensors".into(),
        msg: e.to_string(),
    })?;
    let names: BTreeSet<&str> = st.names().into_iter().collect();
    let mut sink = WeightSink::for_model(backend, cfg, &|n| names.contains(n))?;
    for_each_hqq_tensor(cfg, weights, spec, o, progress, |t| sink.accept(t))?;
    Ok(sink)
}

/// HQQ applied to a stream of tensors (an f16 package arriving shard by shard): each of the
/// language model's linears is quantized the moment it completes, everything else passes
/// through. Fed into a [`WeightSink`], each linear is packed and uploaded before the next
/// one arrives, so the tab never holds the f16 model whole.
pub struct HqqStage {
    targets: BTreeSet<String>,
    spec: QuantSpec,
    opts: HqqOptions,
    done: usize,
}

impl HqqStage {
    pub fn new(cfg: &Idefics3Config, spec: QuantSpec, opts: HqqOptions) -> Result<Self> {
        spec.validate()?;
        Ok(Self {
            targets: quantized_linears(cfg, false)
                .into_iter()
                .map(|t| format!("{t}.weight"))
                .collect(),
            spec,
            opts,
            done: 0,
        })
    }

    /// For the package `manifest` describes, whichever family it holds (see
    /// [`HqqStage::for_model`]).
    pub fn for_manifest(
        manifest: &crate::package::Manifest,
        spec: QuantSpec,
        opts: HqqOptions,
    ) -> Result<Self> {
        let names: Vec<String> = manifest.tensors.iter().map(|t| t.name.clone()).collect();
        Self::for_model(&manifest.config.to_string(), &names, spec, opts)
    }

    /// For a source of the model `config` (its `config.json` text) holding the tensors
    /// `names`: Idefics3's decoder linears by their names, Qwen2-VL's by
    /// [`crate::model::qwen2vl::loader::is_language_linear`] (checked to be all seven of every
    /// layer, so a renamed layout cannot pass half-quantized).
    pub fn for_model(
        config: &str,
        names: &[String],
        spec: QuantSpec,
        opts: HqqOptions,
    ) -> Result<Self> {
        use crate::model::arch::Architecture;
        use crate::model::qwen2vl::{loader, Qwen2VlConfig};
        match Architecture::from_config_json(config)? {
            Architecture::Idefics3 => Self::new(&Idefics3Config::from_json(config)?, spec, opts),
            Architecture::Qwen2Vl => {
                spec.validate()?;
                let cfg = Qwen2VlConfig::from_json(config)?;
                let targets: BTreeSet<String> = names
                    .iter()
                    .filter(|n| loader::is_language_linear(n))
                    .cloned()
                    .collect();
                let want = loader::language_linear_count(&cfg);
                if targets.len() != want {
                    return Err(Error::Package(format!(
                        "the model has {} language-model linears, expected {want}",
                        targets.len()
                    )));
                }
                Ok(Self {
                    targets,
                    spec,
                    opts,
                    done: 0,
                })
            }
        }
    }

    /// Linears quantized so far, and how many there are.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.targets.len())
    }

    /// `t` quantized when it is one of the linears, unchanged otherwise. The values are
    /// decoded exactly as [`for_each_hqq_tensor`] decodes a checkpoint's, so the result is
    /// bit-identical to `relvqa quantize --method hqq`.
    pub fn apply(&mut self, t: LoadedTensor) -> Result<LoadedTensor> {
        if !self.targets.contains(&t.name) {
            return Ok(t);
        }
        let LoadedTensor { name, shape, data } = t;
        let values: Vec<f32> = match data {
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::F32(v) => v,
            TensorData::Packed(_) => {
                return Err(Error::Package(format!(
                    "tensor `{name}` is already quantized; quantizing in the browser needs the \
                     f16 package"
                )))
            }
        };
        let (rows, cols) = match shape.as_slice() {
            [r, c] => (*r, *c),
            other => {
                return Err(Error::TensorShape {
                    name,
                    expected: vec![0, 0],
                    found: other.to_vec(),
                })
            }
        };
        self.spec.check_k(&name, cols)?;
        let p = hqq::quantize(&name, &values, rows, cols, self.spec, &self.opts)?;
        self.done += 1;
        Ok(LoadedTensor {
            name,
            shape,
            data: TensorData::Packed(p),
        })
    }
}
