//! `relvqa generate` and `relvqa perplexity`: the language model alone, prompted through the
//! checkpoint's own chat template. These are how a converted real checkpoint (SmolLM2 from
//! GGUF) is checked: coherent text, and perplexity per bit width.

use std::path::PathBuf;
use std::time::Instant;

use super::{with_backend, BackendArg, ModelArg};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::any_vqa::AnyVqa;
use crate::model::chat::{user_prompt, ChatTemplate};

/// The fixed English text perplexity is measured on by default (the Apache License 2.0, which
/// ships with this repository's dependencies and is not in any model's chat data format).
pub const DEFAULT_TEXT: &str = "assets/text/apache-2.0.txt";

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// The user's message (rendered with the model's chat template unless --raw).
    #[arg(long)]
    prompt: String,
    /// Continue the prompt text as is, without the chat template.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Print one JSON object (text, token counts, timings).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// A UTF-8 text file.
    #[arg(long, default_value = DEFAULT_TEXT)]
    text: PathBuf,
    /// Tokens per independent window (each window's first token is context only).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Score at most this many tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
    #[arg(long)]
    json: bool,
}

fn generate_on<B: Backend>(a: &GenerateArgs, b: B) -> Result<()> {
    let t = Instant::now();
    let m = AnyVqa::load_path(b, &a.model.model, None)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let template = if a.raw {
        None
    } else {
        ChatTemplate::from_model_dir(&a.model.model)?
    };
    let prompt = user_prompt(template.as_ref(), &a.prompt, a.raw)?;
    let clock = Instant::now();
    let now = || clock.elapsed().as_secs_f64() * 1e3;
    let g = pollster::block_on(m.generate(&prompt, a.max_new_tokens, &now))?;
    let r = g.report(&prompt, m.backend().name());
    if a.json {
        let mut v = serde_json::to_value(&r).map_err(|e| Error::Invalid(e.to_string()))?;
        v["load_ms"] = load_ms.into();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| Error::Invalid(e.to_string()))?
        );
    } else {
        println!("{}", r.text);
        eprintln!(
            "[{} prompt tokens, {} new; load {load_ms:.0} ms, prefill {:.0} ms, decode {:.1} tokens/s on {}]",
            r.prompt_tokens, r.new_tokens, r.prefill_ms, r.decode_tokens_per_s, r.backend
        );
    }
    Ok(())
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    with_backend!(a.backend.backend, |b| generate_on(&a, b))
}

#[derive(serde::Serialize)]
struct PerplexityOut {
    model: String,
    text: String,
    tokens_scored: usize,
    window: usize,
    nll_per_token: f64,
    perplexity: f64,
    seconds: f64,
}

fn perplexity_on<B: Backend>(a: &PerplexityArgs, b: B) -> Result<()> {
    let vqa = a.model.load_on(b)?;
    let text =
        std::fs::read_to_string(&a.text).map_err(|e| Error::io(a.text.display().to_string(), e))?;
    let mut ids = vqa.tokenizer.encode(&text)?;
    if let Some(n) = a.max_tokens {
        ids.truncate(n);
    }
    let t = Instant::now();
    let (sum, count) = pollster::block_on(vqa.text_nll(&ids, a.window))?;
    if count == 0 {
        return Err(Error::Invalid(format!(
            "{} has fewer than 2 tokens to score",
            a.text.display()
        )));
    }
    let nll = sum / count as f64;
    let o = PerplexityOut {
        model: a.model.model.display().to_string(),
        text: a.text.display().to_string(),
        tokens_scored: count,
        window: a.window,
        nll_per_token: nll,
        perplexity: nll.exp(),
        seconds: t.elapsed().as_secs_f64(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&o).map_err(|e| Error::Invalid(e.to_string()))?
        );
    } else {
        println!(
            "{}: perplexity {:.3} ({:.4} nats/token) over {} tokens of {}, windows of {} ({:.1} s)",
            o.model, o.perplexity, nll, count, o.text, a.window, o.seconds
        );
    }
    Ok(())
}

pub fn perplexity(a: PerplexityArgs) -> Result<()> {
    with_backend!(a.backend.backend, |b| perplexity_on(&a, b))
}
