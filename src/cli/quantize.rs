//! `relvqa quantize`: a model directory in (Idefics3 or Qwen2-VL, from `config.json`), a
//! quantized package out.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArg;
use crate::error::{Error, Result};
use crate::package::{write_package, MAX_SHARD_BYTES};
use crate::quant::hqq::HqqOptions;
use crate::quant::pipeline::{quantize_dir, QuantizeOptions, QuantizeReport};
use crate::quant::spec::DEFAULT_GROUP;
use crate::quant::{Method, QuantSpec};

/// File beside `manifest.json` with the quantization report (bytes, per-layer errors, MBQ's
/// chosen scales), so a package says how it was made.
pub const REPORT_FILE: &str = "quantize_report.json";

#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArg,
    /// rtn (round-to-nearest), hqq (data-free) or mbq (data-aware, modality-balanced;
    /// calibrates on train-split samples through the model's own prompt format).
    #[arg(long)]
    method: String,
    /// 8, 4, 3 or 2.
    #[arg(long)]
    bits: u32,
    /// Group size along the input dimension: 32, 64 or 128.
    #[arg(long, default_value_t = DEFAULT_GROUP)]
    group: usize,
    /// MBQ calibration samples, drawn from the train split.
    #[arg(long, default_value_t = 128)]
    calib: usize,
    /// Also quantize the vision tower's linears (Idefics3).
    #[arg(long)]
    vision: bool,
    /// Output package directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn options(
    method: Method,
    bits: u32,
    group: usize,
    calib: usize,
    vision: bool,
) -> Result<QuantizeOptions> {
    Ok(QuantizeOptions {
        method,
        spec: QuantSpec::new(bits, group)?,
        calib,
        vision,
        hqq: HqqOptions::default(),
    })
}

/// Quantize `model` into the package directory `out` behind a progress bar.
pub fn build_package(model: &Path, o: &QuantizeOptions, out: &Path) -> Result<QuantizeReport> {
    let pb = ProgressBar::new(1);
    if let Ok(s) =
        ProgressStyle::with_template("{elapsed_precise} {msg:>14} [{bar:30}] {pos}/{len}")
    {
        pb.set_style(s);
    }
    let q = quantize_dir(model, o, |stage, done, total| {
        pb.set_message(stage.to_string());
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    write_package(out, &q.config, &q.tokenizer, q.tensors, MAX_SHARD_BYTES)?;
    // The chat template, a conversion's provenance and (Qwen2-VL) the processor settings
    // travel with the weights.
    for &name in q.model_files {
        if let Some(bytes) = crate::package::read_model_file(model, name)? {
            crate::package::write_model_file(out, name, &bytes)?;
        }
    }
    let text =
        serde_json::to_string_pretty(&q.report).map_err(|e| Error::Invalid(e.to_string()))?;
    let p = out.join(REPORT_FILE);
    std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
    Ok(q.report)
}

pub fn print_summary(r: &QuantizeReport) {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "{} {}-bit g{}: total {} bytes ({:.2} MiB, {:.3}x f16); language model {} bytes ({:.3}x f16); \
         packed linears {:.3} bits/weight (scales and zeros included)",
        r.method.name(),
        r.bits,
        r.group,
        r.total_bytes,
        mib(r.total_bytes),
        r.total_bytes as f64 / r.f16_total_bytes.max(1) as f64,
        r.lm_bytes,
        r.lm_bytes as f64 / r.lm_f16_bytes.max(1) as f64,
        r.bits_per_weight
    );
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let method: Method = a.method.parse()?;
    let o = options(method, a.bits, a.group, a.calib, a.vision)?;
    let r = build_package(&a.model.model, &o, &a.out)?;
    println!(
        "{:<48} {:>11} {:>8} {:>10} {:>10}",
        "layer", "shape", "bits/w", "rel.err", "mean|dW|"
    );
    for l in &r.layers {
        println!(
            "{:<48} {:>11} {:>8.3} {:>10.4} {:>10.2e}",
            l.name,
            format!("{}x{}", l.rows, l.cols),
            l.bits_per_weight,
            l.rel_frobenius,
            l.mean_abs
        );
    }
    if !r.mbq_scales.is_empty() {
        println!(
            "MBQ vision/text gradient ratio per layer, measured: attn {:?}, mlp {:?}",
            r.mbq_raw_ratio_attn, r.mbq_raw_ratio_mlp
        );
        println!(
            "MBQ vision/text ratio per layer (floored at median): attn {:?}, mlp {:?}",
            r.mbq_ratio_attn, r.mbq_ratio_mlp
        );
        for s in &r.mbq_scales {
            println!(
                "  layer {} {:<36} alpha {:.2}  loss {:.3e} (alpha 0: {:.3e})",
                s.layer, s.group, s.alpha, s.loss, s.loss_rtn
            );
        }
    }
    print_summary(&r);
    println!("wrote {}", a.out.display());
    Ok(())
}
