//! `relvqa generate` and `relvqa perplexity`: the language model alone, prompted through the
//! checkpoint's own chat template. These are how a converted real checkpoint (SmolLM2 from
//! GGUF) is checked: coherent text, and perplexity per bit width.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{with_backend, BackendArg, ModelArg};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::chat::{ChatTemplate, Message, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::model::generate::Vqa;
use crate::package::read_model_file;

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

/// The model's chat template, from its directory or package.
pub fn chat_template(dir: &Path) -> Result<Option<ChatTemplate>> {
    let tc = read_model_file(dir, TOKENIZER_CONFIG_FILE)?;
    let ct = read_model_file(dir, CHAT_TEMPLATE_FILE)?;
    ChatTemplate::from_checkpoint(tc.as_deref(), ct.as_deref())
}

/// Tokens that end an assistant turn in the chat formats we know, where the vocabulary has them.
fn stop_ids<B: Backend>(vqa: &Vqa<B>) -> Vec<u32> {
    let mut ids: Vec<u32> = ["<|im_end|>", "<end_of_utterance>", "<|endoftext|>"]
        .iter()
        .filter_map(|t| vqa.tokenizer.token_to_id(t))
        .collect();
    ids.extend(vqa.model.cfg.text_config.eos_token_id);
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[derive(serde::Serialize)]
struct GenerateOut<'a> {
    prompt: &'a str,
    text: &'a str,
    prompt_tokens: usize,
    new_tokens: usize,
    stopped: bool,
    backend: &'static str,
    load_ms: f64,
    prefill_ms: f64,
    decode_tokens_per_s: f64,
}

fn generate_on<B: Backend>(a: &GenerateArgs, b: B) -> Result<()> {
    let t = Instant::now();
    let vqa = a.model.load_on(b)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let prompt = if a.raw {
        a.prompt.clone()
    } else {
        let tmpl = chat_template(&a.model.model)?.ok_or_else(|| {
            Error::ChatTemplate(format!(
                "{} has no chat template ({TOKENIZER_CONFIG_FILE} or {CHAT_TEMPLATE_FILE}); pass --raw to continue plain text",
                a.model.model.display()
            ))
        })?;
        tmpl.render(&[Message::user(a.prompt.clone())], true)?
    };
    let ids = vqa.tokenizer.encode(&prompt)?;
    let stop = stop_ids(&vqa);
    // Prefill timed apart from decoding: the first logits are the end of the prefill.
    let t = Instant::now();
    let mut dec = crate::model::text_gen::TextDecoder::start(&vqa, &ids, a.max_new_tokens)?;
    let mut logits = pollster::block_on(dec.next_logits())?;
    let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let (mut out, mut stopped) = (Vec::new(), false);
    for step in 0..a.max_new_tokens {
        let (tok, _, _) = crate::model::generate::pick_greedy(&logits)
            .ok_or_else(|| Error::Invalid("the model produced non-finite logits".into()))?;
        if stop.contains(&tok) {
            stopped = true;
            break;
        }
        out.push(tok);
        if step + 1 < a.max_new_tokens {
            dec.push(tok)?;
            logits = pollster::block_on(dec.next_logits())?;
        }
    }
    let decode_s = t.elapsed().as_secs_f64();
    let text = vqa.tokenizer.decode(&out)?;
    let o = GenerateOut {
        prompt: &prompt,
        text: &text,
        prompt_tokens: ids.len(),
        new_tokens: out.len(),
        stopped,
        backend: vqa.backend.name(),
        load_ms,
        prefill_ms,
        decode_tokens_per_s: out.len() as f64 / decode_s.max(1e-9),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&o).map_err(|e| Error::Invalid(e.to_string()))?
        );
    } else {
        println!("{text}");
        eprintln!(
            "[{} prompt tokens, {} new; load {:.0} ms, prefill {:.0} ms, decode {:.1} tokens/s on {}]",
            o.prompt_tokens, o.new_tokens, load_ms, prefill_ms, o.decode_tokens_per_s, o.backend
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
