//! `relvqa quantize` for a Qwen2-VL checkpoint: the language model's linears packed with RTN,
//! HQQ or MBQ, everything else kept in the checkpoint's precision (f16 stays f16; f32 and bf16 are
//! stored as f32, exactly). Which tensors are linears comes from the model definition itself
//! ([`ParamPlan`]: what `Qwen2Vl::load` asks for with [`crate::model::params::Params::weight`]),
//! and which of those are quantized from [`is_language_linear`] — the selection
//! [`crate::quant::hqq_params::HqqParams`] makes at load time, with the same quantizer call on
//! the same decoded values, so an HQQ package holds bit for bit the weights of
//! `relvqa ask --hqq-bits` and loads to the same logits.
//!
//! MBQ calibrates on `train`-split shapes samples through the checkpoint's own processor and
//! chat template ([`super::mbq::Qwen2VlSource`]), then searches and folds with the code
//! Idefics3 uses; the folded float tensors (norms, `v_proj`'s weight and bias when it feeds
//! `o_proj`) are stored in the checkpoint's precision like the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use half::f16;
use safetensors::{Dtype, SafeTensors};

use super::mbq::Qwen2VlSource;
use super::pipeline::{
    config_value, dims2, layer_error, package_tensors, quantize_linear, read, run_mbq, MbqOutcome,
    QuantizeOptions, QuantizeReport, Quantized,
};
use super::spec::Method;
use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::model::chat::{ChatTemplate, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::model::loader::{TOKENIZER_FILE, WEIGHTS_FILE};
use crate::model::params::host_tensor_from_view;
use crate::model::qwen2vl::loader::{
    is_language_linear, language_linear_count, load_from_bytes_with, PREPROCESSOR_FILE,
};
use crate::model::qwen2vl::Qwen2VlConfig;
use crate::model::weights::ParamPlan;
use crate::package::PackageTensor;

const ARCH: &str = "Qwen2-VL";

/// What a Qwen2-VL package carries besides weights and tokenizer: the chat template and the
/// processor settings [`crate::model::qwen2vl::loader::load_package_dir`] reads.
const QWEN2VL_FILES: &[&str] = &[TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, PREPROCESSOR_FILE];

fn optional(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(name)).ok()
}

/// Whether the report counts `name` as the language model's (decoder, embeddings, final
/// norm; neither the vision tower nor `lm_head`).
fn in_language_model(name: &str) -> bool {
    name.starts_with("model.") && !name.starts_with("model.visual.")
}

/// Quantize the Qwen2-VL checkpoint in `dir` (its `config.json` already read).
pub fn quantize(
    dir: &Path,
    o: &QuantizeOptions,
    config_bytes: &[u8],
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Quantized> {
    if o.vision {
        return Err(Error::Unsupported {
            what: "quantizing the vision tower (--vision)".into(),
            arch: ARCH,
            instead: "leave out --vision; the language model's linears are quantized".into(),
        });
    }
    let tokenizer = read(dir, TOKENIZER_FILE)?;
    let weights = read(dir, WEIGHTS_FILE)?;
    let text = std::str::from_utf8(config_bytes)
        .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
    let cfg = Qwen2VlConfig::from_json(text)?;
    // Loading first checks every tensor's name, shape and dtype, the tokenizer and the
    // processor settings against the config, and the template, as `relvqa ask` would.
    let template = ChatTemplate::from_checkpoint(
        optional(dir, TOKENIZER_CONFIG_FILE).as_deref(),
        optional(dir, CHAT_TEMPLATE_FILE).as_deref(),
    )?;
    let pre = optional(dir, PREPROCESSOR_FILE);
    load_from_bytes_with(
        CpuBackend::new(),
        config_bytes,
        &tokenizer,
        &weights,
        template.clone(),
        pre.as_deref(),
        None,
    )?;
    let st = SafeTensors::deserialize(&weights).map_err(|e| Error::WeightsFile {
        file: WEIGHTS_FILE.into(),
        msg: e.to_string(),
    })?;
    let names: BTreeSet<&str> = st.names().into_iter().collect();
    let plan = ParamPlan::for_model(&cfg, &|n| names.contains(n))?;
    let targets: Vec<&str> = plan
        .iter()
        .filter(|(n, p)| p.linear && p.shape.len() == 2 && is_language_linear(n))
        .map(|(n, _)| n)
        .collect();
    if targets.len() != language_linear_count(&cfg) {
        return Err(Error::Invalid(format!(
            "found {} language-model linears, expected {}; the checkpoint's tensor names are \
             not Qwen2-VL's",
            targets.len(),
            language_linear_count(&cfg)
        )));
    }
    // Only what the model asks for goes into the package (the loader ignores the rest of a
    // checkpoint too), decoded as `SafetensorsParams` decodes it; f16 ones stay f16.
    let mut w = BTreeMap::new();
    let mut half = BTreeSet::new();
    for (name, p) in plan.iter() {
        let view = st
            .tensor(name)
            .map_err(|_| Error::MissingTensor { name: name.into() })?;
        if view.dtype() == Dtype::F16 {
            half.insert(name.to_string());
        }
        w.insert(
            name.to_string(),
            host_tensor_from_view(name, &view, &p.shape)?,
        );
    }
    for name in &targets {
        let t = w.get(*name).ok_or_else(|| Error::MissingTensor {
            name: (*name).into(),
        })?;
        o.spec.check_k(name, dims2(name, t)?.1)?;
    }
    // MBQ folds scales into `w`; errors are reported against the weights before that.
    let original = (o.method == Method::Mbq).then(|| w.clone());
    let mut outcome = MbqOutcome::default();
    if o.method == Method::Mbq {
        let src = Qwen2VlSource::new(config_bytes, &tokenizer, &weights, template, pre.as_deref())?;
        outcome = run_mbq(&src, &mut w, o, &mut progress)?;
    }
    let mut packed = BTreeMap::new();
    let mut layers = Vec::new();
    for (i, name) in targets.iter().enumerate() {
        let t = w.get(*name).ok_or_else(|| Error::MissingTensor {
            name: (*name).into(),
        })?;
        let (rows, cols) = dims2(name, t)?;
        let p = quantize_linear(name, &t.data, rows, cols, o)?;
        layers.push(layer_error(name, original.as_ref().unwrap_or(&w), &w, &p)?);
        packed.insert(name.to_string(), p);
        progress("quantize", i + 1, targets.len());
    }
    let (tensors, bytes) = package_tensors(
        &w,
        packed,
        |name, t| {
            if half.contains(name) {
                PackageTensor::Float {
                    shape: t.shape.clone(),
                    data: t.data.iter().map(|&v| f16::from_f32(v)).collect(),
                }
            } else {
                PackageTensor::Float32 {
                    shape: t.shape.clone(),
                    data: t.data.clone(),
                }
            }
        },
        in_language_model,
    );
    Ok(Quantized {
        scaled: w,
        config: config_value(text)?,
        tokenizer,
        tensors,
        report: QuantizeReport::new(o, bytes, layers, outcome),
        model_files: QWEN2VL_FILES,
    })
}
