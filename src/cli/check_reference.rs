//! `relvqa check-reference`: our model against a golden file written by transformers
//! (`tools/golden/`). Exit code 0 only when the prompt's logits agree within the tolerance and
//! the greedy ids are equal, so CI and users can gate on it.

use std::path::PathBuf;

use super::{with_backend, BackendArg};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::golden::{check_reference, Golden, DEFAULT_TOLERANCE};

#[derive(clap::Args, Debug)]
pub struct CheckReferenceArgs {
    /// Model directory (config.json, tokenizer.json, model.safetensors), e.g. a fixture
    /// written by tools/golden/make_idefics3.py.
    #[arg(long)]
    model: PathBuf,
    /// golden.safetensors: input_ids, pixel_values, pixel_attention_mask, logits, generated.
    #[arg(long)]
    golden: PathBuf,
    #[command(flatten)]
    backend: BackendArg,
    /// Largest accepted |Δlogit| (the weights are f32 on both sides).
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    tolerance: f32,
}

pub fn run(a: CheckReferenceArgs) -> Result<()> {
    if !(a.tolerance.is_finite() && a.tolerance >= 0.0) {
        return Err(Error::Invalid(format!(
            "--tolerance {} must be a non-negative number",
            a.tolerance
        )));
    }
    with_backend!(a.backend.backend, |b| run_on(b, &a))
}

fn run_on<B: Backend>(backend: B, a: &CheckReferenceArgs) -> Result<()> {
    let vqa = crate::model::loader::load_dir(backend, &a.model)?;
    let file = a.golden.display().to_string();
    let bytes = std::fs::read(&a.golden).map_err(|e| Error::io(file.clone(), e))?;
    let golden = Golden::from_bytes(&file, &bytes, &vqa.model.cfg)?;
    let r = pollster::block_on(check_reference(&vqa, &golden, a.tolerance))?;

    println!("model:  {} ({})", a.model.display(), vqa.backend.name());
    let meta: Vec<String> = golden
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={}", v.escape_debug()))
        .collect();
    println!("golden: {file} ({})", meta.join(", "));
    println!(
        "prompt: {} tokens, {} image(s)",
        golden.input_ids.len(),
        golden.pixel_values.shape[0]
    );
    println!(
        "logits {:?}: max |Δ| = {:.3e} at position {}, token {} (tolerance {:.0e}): {}",
        r.logits_shape,
        r.max_abs_diff,
        r.max_at.0,
        r.max_at.1,
        r.tolerance,
        if r.logits_ok() { "ok" } else { "TOO LARGE" }
    );
    println!(
        "greedy ids ({} steps): ours {:?}, reference {:?}: {}",
        r.generated_reference.len(),
        r.generated_ours,
        r.generated_reference,
        if r.ids_equal() { "equal" } else { "DIFFER" }
    );
    if r.passed() {
        println!("PASS");
        return Ok(());
    }
    let mut why = Vec::new();
    if !r.logits_ok() {
        why.push(format!(
            "max |Δlogit| {:.3e} exceeds {:.0e}",
            r.max_abs_diff, r.tolerance
        ));
    }
    if let Some(step) = r
        .generated_ours
        .iter()
        .zip(&r.generated_reference)
        .position(|(o, g)| o != g)
    {
        why.push(format!("greedy ids differ from step {step}"));
    }
    println!("FAIL");
    Err(Error::Invalid(format!(
        "reference check failed: {}",
        why.join("; ")
    )))
}
