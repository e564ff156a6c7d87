//! From a model directory to the tensors of a quantized package: which linears are quantized,
//! by which method, and how far each moved. The architecture is read from `config.json`;
//! Qwen2-VL checkpoints go through [`super::pipeline_qwen2vl`], which shares the quantizer
//! calls, the error measure and the package assembly below.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;

use super::hqq::{self, HqqOptions};
use super::mbq::{self, HostWeights, ScaleChoice};
use super::packed::PackedTensor;
use super::rtn;
use super::spec::{Method, QuantSpec};
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::model::arch::Architecture;
use crate::model::idefics3::Idefics3Config;
use crate::model::loader::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::model::tokenizer::VqaTokenizer;
use crate::package::PackageTensor;

#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub method: Method,
    pub spec: QuantSpec,
    /// MBQ calibration samples from the train split.
    pub calib: usize,
    /// Quantize the vision tower's linears too (default: language model only).
    pub vision: bool,
    pub hqq: HqqOptions,
}

/// One quantized linear and how far its weight moved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerError {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub bits_per_weight: f64,
    /// ||W - Ŵ||_F / ||W||_F against the original (unscaled) weight.
    pub rel_frobenius: f64,
    /// mean |W - Ŵ|.
    pub mean_abs: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QuantizeReport {
    pub method: Method,
    pub bits: u32,
    pub group: usize,
    pub total_bytes: usize,
    /// What the same tensors would take all in f16.
    pub f16_total_bytes: usize,
    /// Every tensor of the language model (embeddings and norms included; not lm_head):
    /// `model.text_model.*` for Idefics3, `model.*` outside `model.visual.*` for Qwen2-VL.
    pub lm_bytes: usize,
    pub lm_f16_bytes: usize,
    /// Packed linears only, scales and zeros included.
    pub bits_per_weight: f64,
    pub layers: Vec<LayerError>,
    pub mbq_scales: Vec<ScaleChoice>,
    /// MBQ's vision/text gradient ratios per layer as the search used them (floored at their
    /// median across layers).
    pub mbq_ratio_attn: Vec<f32>,
    pub mbq_ratio_mlp: Vec<f32>,
    /// The same ratios as measured, before flooring.
    pub mbq_raw_ratio_attn: Vec<f32>,
    pub mbq_raw_ratio_mlp: Vec<f32>,
}

/// What MBQ chose and measured, for the report (empty for the other methods).
#[derive(Debug, Clone, Default)]
pub struct MbqOutcome {
    pub scales: Vec<ScaleChoice>,
    pub ratio_attn: Vec<f32>,
    pub ratio_mlp: Vec<f32>,
    pub raw_attn: Vec<f32>,
    pub raw_mlp: Vec<f32>,
}

pub struct Quantized {
    /// The float weights the packed tensors were rounded from: the original ones, except that
    /// MBQ has folded its scales in. Kept so callers can measure output error.
    pub scaled: HostWeights,
    pub config: serde_json::Value,
    pub tokenizer: Vec<u8>,
    pub tensors: Vec<(String, PackageTensor)>,
    pub report: QuantizeReport,
    /// Files of the model directory that travel with the weights when present (the chat
    /// template, a conversion's provenance, the image processor's settings where the
    /// architecture's loader reads them).
    pub model_files: &'static [&'static str],
}

/// What an Idefics3 package carries besides weights and tokenizer.
const IDEFICS3_FILES: &[&str] = &[
    crate::model::chat::TOKENIZER_CONFIG_FILE,
    crate::model::chat::CHAT_TEMPLATE_FILE,
    crate::convert::CONVERSION_FILE,
];

pub use super::load_time::quantized_linears;

fn host_weights(bytes: &[u8], file: &str) -> Result<HostWeights> {
    super::load_time::host_weights(bytes, file)
}

pub(super) fn dims2(name: &str, t: &HostTensor) -> Result<(usize, usize)> {
    match t.shape.as_slice() {
        [r, c] => Ok((*r, *c)),
        other => Err(Error::TensorShape {
            name: name.into(),
            expected: vec![0, 0],
            found: other.to_vec(),
        }),
    }
}

/// Quantize the model in `dir`. `progress(stage, done, total)` reports each phase.
pub fn quantize_dir(
    dir: &Path,
    o: &QuantizeOptions,
    progress: impl FnMut(&str, usize, usize),
) -> Result<Quantized> {
    o.spec.validate()?;
    let config_bytes = read(dir, CONFIG_FILE)?;
    let text = std::str::from_utf8(&config_bytes)
        .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
    match Architecture::from_config_json(text)? {
        Architecture::Idefics3 => quantize_idefics3(dir, o, &config_bytes, progress),
        Architecture::Qwen2Vl => super::pipeline_qwen2vl::quantize(dir, o, &config_bytes, progress),
    }
}

fn quantize_idefics3(
    dir: &Path,
    o: &QuantizeOptions,
    config_bytes: &[u8],
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Quantized> {
    let tokenizer = read(dir, TOKENIZER_FILE)?;
    let weights_bytes = read(dir, WEIGHTS_FILE)?;
    let text = std::str::from_utf8(config_bytes)
        .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
    let cfg = Idefics3Config::from_json(text)?;
    let config = config_value(text)?;
    // Loading the model first checks every tensor's name, shape and dtype against the config.
    crate::model::loader::load_from_bytes(
        crate::backend::cpu::CpuBackend::new(),
        config_bytes,
        &tokenizer,
        &weights_bytes,
    )?;
    let original = host_weights(&weights_bytes, WEIGHTS_FILE)?;
    let mut w = original.clone();
    let targets = quantized_linears(&cfg, o.vision);
    for t in &targets {
        let name = format!("{t}.weight");
        let wt = mbq::get(&w, &name)?;
        o.spec.check_k(&name, dims2(&name, wt)?.1)?;
    }
    let mut outcome = MbqOutcome::default();
    if o.method == Method::Mbq {
        let tok = VqaTokenizer::from_bytes(&tokenizer)?;
        let src = mbq::Idefics3Source::new(&cfg, &tok, &weights_bytes);
        outcome = run_mbq(&src, &mut w, o, &mut progress)?;
    }
    let mut packed: BTreeMap<String, PackedTensor> = BTreeMap::new();
    let mut layers = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let name = format!("{t}.weight");
        let wt = mbq::get(&w, &name)?;
        let (rows, cols) = dims2(&name, wt)?;
        let p = quantize_linear(&name, &wt.data, rows, cols, o)?;
        layers.push(layer_error(&name, &original, &w, &p)?);
        packed.insert(name, p);
        progress("quantize", i + 1, targets.len());
    }
    let (tensors, bytes) = package_tensors(
        &w,
        packed,
        |_, t| PackageTensor::Float {
            shape: t.shape.clone(),
            data: t.data.iter().map(|&v| f16::from_f32(v)).collect(),
        },
        |name| name.starts_with("model.text_model."),
    );
    Ok(Quantized {
        scaled: w,
        config,
        tokenizer,
        tensors,
        report: QuantizeReport::new(o, bytes, layers, outcome),
        model_files: IDEFICS3_FILES,
    })
}

/// MBQ on float weights `w`: calibrate on `src`'s train-split samples, then search and fold
/// each layer's scales into `w`; the chosen scales and the floored ratios for the report.
pub(super) fn run_mbq<S: mbq::CalibrationSource>(
    src: &S,
    w: &mut HostWeights,
    o: &QuantizeOptions,
    progress: &mut impl FnMut(&str, usize, usize),
) -> Result<MbqOutcome> {
    let cal = mbq::calibrate(src, 0, o.calib, |d| progress("calibrate", d, o.calib))?;
    let scales = mbq::search_and_fold(w, &src.layout(), &cal, o.spec, |d, n| {
        progress("scale search", d, n)
    })?;
    Ok(MbqOutcome {
        scales,
        ratio_attn: cal.ratio_attn,
        ratio_mlp: cal.ratio_mlp,
        raw_attn: cal.raw_attn,
        raw_mlp: cal.raw_mlp,
    })
}

pub(super) fn config_value(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))
}

pub(super) fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| Error::Model {
        path: p.display().to_string(),
        msg: format!("cannot read {name}: {e}"),
    })
}

/// One linear's weight packed by `o.method`: HQQ's solver, or round-to-nearest (MBQ rounds
/// its scaled weight with RTN too and is recorded as MBQ).
pub(super) fn quantize_linear(
    name: &str,
    data: &[f32],
    rows: usize,
    cols: usize,
    o: &QuantizeOptions,
) -> Result<PackedTensor> {
    match o.method {
        Method::Rtn | Method::Mbq => {
            let mut p = rtn::quantize(name, data, rows, cols, o.spec)?;
            p.method = o.method;
            Ok(p)
        }
        Method::Hqq => hqq::quantize(name, data, rows, cols, o.spec, &o.hqq),
    }
}

/// Byte counts of a package's tensors, for the report.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ByteTotals {
    total: usize,
    f16_total: usize,
    lm: usize,
    lm_f16: usize,
    packed: usize,
    packed_weights: usize,
}

/// The package's tensors in name order: each packed one from `packed`, every other as `float`
/// encodes it; `in_lm` says which count as the language model's in the report.
pub(super) fn package_tensors(
    w: &HostWeights,
    mut packed: BTreeMap<String, PackedTensor>,
    float: impl Fn(&str, &HostTensor) -> PackageTensor,
    in_lm: impl Fn(&str) -> bool,
) -> (Vec<(String, PackageTensor)>, ByteTotals) {
    let mut tensors = Vec::new();
    let mut b = ByteTotals::default();
    for (name, t) in w {
        let f16_bytes = t.data.len() * 2;
        let (bytes, pt) = match packed.remove(name) {
            Some(p) => {
                b.packed += p.nbytes();
                b.packed_weights += p.rows * p.cols;
                (p.nbytes(), PackageTensor::Packed(p))
            }
            None => {
                let pt = float(name, t);
                let bytes = match &pt {
                    PackageTensor::Float32 { data, .. } => 4 * data.len(),
                    _ => f16_bytes,
                };
                (bytes, pt)
            }
        };
        b.total += bytes;
        b.f16_total += f16_bytes;
        if in_lm(name) {
            b.lm += bytes;
            b.lm_f16 += f16_bytes;
        }
        tensors.push((name.clone(), pt));
    }
    (tensors, b)
}

impl QuantizeReport {
    pub(super) fn new(
        o: &QuantizeOptions,
        b: ByteTotals,
        layers: Vec<LayerError>,
        mbq: MbqOutcome,
    ) -> Self {
        Self {
            method: o.method,
            bits: o.spec.bits,
            group: o.spec.group,
            total_bytes: b.total,
            f16_total_bytes: b.f16_total,
            lm_bytes: b.lm,
            lm_f16_bytes: b.lm_f16,
            bits_per_weight: b.packed as f64 * 8.0 / b.packed_weights.max(1) as f64,
            layers,
            mbq_scales: mbq.scales,
            mbq_ratio_attn: mbq.ratio_attn,
            mbq_ratio_mlp: mbq.ratio_mlp,
            mbq_raw_ratio_attn: mbq.raw_attn,
            mbq_raw_ratio_mlp: mbq.raw_mlp,
        }
    }
}

/// Error of the packed weight against the original. For MBQ the packed tensor holds `W·diag(s)`
/// and the folded previous op holds `1/s`; the effective weight is recovered by dividing the
/// dequantized columns by `s = scaled / original` (exact up to float rounding).
pub(super) fn layer_error(
    name: &str,
    original: &HostWeights,
    scaled: &HostWeights,
    p: &PackedTensor,
) -> Result<LayerError> {
    let w0 = mbq::get(original, name)?;
    let w1 = mbq::get(scaled, name)?;
    let eff = effective_weight(&w0.data, &w1.data, p);
    let (mut num, mut den, mut abs) = (0f64, 0f64, 0f64);
    for (&a, &e) in w0.data.iter().zip(&eff) {
        let d = (a - e) as f64;
        num += d * d;
        den += (a as f64) * (a as f64);
        abs += d.abs();
    }
    Ok(LayerError {
        name: name.to_string(),
        rows: p.rows,
        cols: p.cols,
        bits_per_weight: p.bits_per_weight(),
        rel_frobenius: (num / den.max(1e-30)).sqrt(),
        mean_abs: abs / eff.len().max(1) as f64,
    })
}

/// The weight a packed tensor stands for in the original model's basis: the dequantized
/// values with MBQ's folded scale (`scaled / original`, per element) divided back out.
pub fn effective_weight(original: &[f32], scaled: &[f32], p: &PackedTensor) -> Vec<f32> {
    p.dequantize()
        .iter()
        .zip(original.iter().zip(scaled))
        .map(|(&q, (&a, &b))| if a != 0.0 && b != 0.0 { q * a / b } else { q })
        .collect()
}
