//! Quantizing an f16 checkpoint at load time, in memory: what the web page does when asked for
//! a bit width it has no package for. HQQ only, because it is data-free (no calibration images
//! need to reach the browser) and fast; MBQ needs gradients on calibration data and stays in
//! `relvqa quantize`. The result is exactly what `relvqa quantize --method hqq` would write (a
//! test checks the logits are bit-identical), handed to [`crate::model::loader::load_from_tensors`]
//! without the package's byte format in between.

use std::collections::BTreeMap;

use half::f16;
use safetensors::SafeTensors;

use super::hqq::{self, HqqOptions};
use super::spec::QuantSpec;
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::model::idefics3::Idefics3Config;
use crate::model::params::host_tensor_from_view;
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
/// `spec`, everything else as f16: the tensors of an HQQ package. `progress(done, total)`
/// is called after each quantized layer.
pub fn hqq_tensors(
    cfg: &Idefics3Config,
    weights: &[u8],
    spec: QuantSpec,
    o: &HqqOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<LoadedTensor>> {
    spec.validate()?;
    let targets: Vec<String> = quantized_linears(cfg, false)
        .into_iter()
        .map(|t| format!("{t}.weight"))
        .collect();
    let mut w = host_weights(weights, "model.safetensors")?;
    let mut out = Vec::with_capacity(w.len());
    for (i, name) in targets.iter().enumerate() {
        let t = w
            .remove(name)
            .ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
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
        out.push(LoadedTensor {
            name: name.clone(),
            shape: t.shape,
            data: TensorData::Packed(p),
        });
        progress(i + 1, targets.len());
    }
    for (name, t) in w {
        out.push(LoadedTensor {
            name,
            shape: t.shape,
            data: TensorData::F16(t.data.iter().map(|&v| f16::from_f32(v)).collect()),
        });
    }
    Ok(out)
}
