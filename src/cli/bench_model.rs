//! `relvqa bench model`: whole-model speed at real size, per model directory or package: bytes
//! of weights, load time, prefill and decode tokens per second (the language model, as in
//! `relvqa generate`), the median of repetitions. `--synthetic` builds a random model with
//! SmolVLM-256M's shapes and its HQQ packages first, for machines the real GGUF cannot reach.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{with_backend, BackendArg};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::generate::pick_greedy;
use crate::model::loader::load_path;
use crate::model::text_gen::TextDecoder;
use crate::quant::Method;

#[derive(clap::Args, Debug)]
pub struct ModelBenchArgs {
    /// Model directories or packages, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "synthetic")]
    models: Vec<PathBuf>,
    /// Bench a random SmolVLM-256M-shaped model (SmolLM2-135M decoder) and its HQQ 4/3/2-bit
    /// packages, built in a temporary directory (speed does not depend on weight values).
    #[arg(long)]
    synthetic: bool,
    #[command(flatten)]
    backend: BackendArg,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Repetitions of prefill + decode (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also write the numbers as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct ModelRow {
    model: String,
    backend: String,
    weight_bytes: u64,
    load_ms: f64,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
}

/// Bytes of the weight files (safetensors or package shards), not tokenizers or reports.
fn weight_bytes(dir: &Path) -> Result<u64> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let mut total = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".safetensors") && name != "selector.safetensors"
            || name.ends_with(".bin")
        {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_one<B: Backend>(a: &ModelBenchArgs, b: B, dir: &Path) -> Result<ModelRow> {
    let t = Instant::now();
    let vqa = load_path(b, dir)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let vocab = vqa.model.cfg.text_config.vocab_size as u64;
    // Fixed pseudo-random ids away from the special tokens at both ends of the vocabulary.
    let span = vocab.saturating_sub(400).max(1);
    let ids: Vec<u32> = (0..a.prompt_tokens as u64)
        .map(|i| (100 + (i * 7919) % span) as u32)
        .collect();
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for rep in 0..=a.reps.max(1) {
        let t = Instant::now();
        let mut d = TextDecoder::start(&vqa, &ids, a.new_tokens)?;
        let mut logits = pollster::block_on(d.next_logits())?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 1..a.new_tokens {
            let (tok, _, _) =
                pick_greedy(&logits).ok_or_else(|| Error::Invalid("non-finite logits".into()))?;
            d.push(tok)?;
            logits = pollster::block_on(d.next_logits())?;
        }
        let decode = t.elapsed().as_secs_f64();
        if rep > 0 {
            pre.push(a.prompt_tokens as f64 / prefill);
            dec.push(a.new_tokens.saturating_sub(1) as f64 / decode.max(1e-9));
        }
    }
    Ok(ModelRow {
        model: dir.display().to_string(),
        backend: vqa.backend.name().to_string(),
        weight_bytes: weight_bytes(dir)?,
        load_ms,
        prefill_tokens_per_s: median(pre),
        decode_tokens_per_s: median(dec),
    })
}

/// The random SmolVLM-256M-shaped model and its HQQ packages under `root`.
fn synthetic_models(root: &Path) -> Result<Vec<PathBuf>> {
    let f16 = root.join("f16");
    eprintln!(
        "building a random SmolVLM-256M-shaped model in {} ...",
        root.display()
    );
    let g = crate::convert::synthetic_smollm2(0)?;
    crate::convert::convert_llama(
        g,
        &f16,
        crate::convert::VisionShape::SmolVlm256m,
        0,
        serde_json::json!({"source": "synthetic (random text weights too): speed only"}),
    )?;
    let mut out = vec![f16.clone()];
    for bits in [4, 3, 2] {
        let dir = root.join(format!("hqq{bits}"));
        eprintln!("quantizing hqq{bits} ...");
        let o = super::quantize::options(Method::Hqq, bits, 64, 0, false)?;
        super::quantize::build_package(&f16, &o, &dir)?;
        out.push(dir);
    }
    Ok(out)
}

pub fn run(a: ModelBenchArgs) -> Result<()> {
    let tmp;
    let models = if a.synthetic {
        tmp = tempfile_dir()?;
        synthetic_models(&tmp)?
    } else {
        a.models.clone()
    };
    let mut rows = Vec::new();
    for m in &models {
        let row = with_backend!(a.backend.backend, |b| bench_one(&a, b, m))?;
        rows.push(row);
    }
    println!(
        "{:<40} {:>8} {:>11} {:>9} {:>14} {:>13}",
        "model", "backend", "weights MiB", "load ms", "prefill tok/s", "decode tok/s"
    );
    for r in &rows {
        println!(
            "{:<40} {:>8} {:>11.1} {:>9.0} {:>14.1} {:>13.1}",
            r.model,
            r.backend,
            r.weight_bytes as f64 / (1024.0 * 1024.0),
            r.load_ms,
            r.prefill_tokens_per_s,
            r.decode_tokens_per_s
        );
    }
    println!(
        "(prompt {} tokens, {} decoded, median of {} repetitions)",
        a.prompt_tokens,
        a.new_tokens,
        a.reps.max(1)
    );
    if let Some(p) = &a.json {
        let text =
            serde_json::to_string_pretty(&rows).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
    }
    Ok(())
}

/// A fresh directory under the system temp dir (removed by the OS, not by us: the packages
/// are worth keeping for a rerun).
fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("relvqa-bench-model-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| Error::io(d.display().to_string(), e))?;
    Ok(d)
}
