//! `relvqa ask`: answer one question about one image, with confidence and abstain decision.

use std::path::PathBuf;
use std::time::Instant;

use super::calibrate::load_calibration;
use super::{with_backend, BackendArg, ModelArg};
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::any_vqa::AnyVqa;
use crate::model::generate::Vqa;
use crate::model::image::decode_image;
use crate::selector::decision::{self, Confidence, Decision};
use crate::selector::store;

#[derive(clap::Args, Debug)]
pub struct AskArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// PNG or JPEG image.
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    question: String,
    /// Target risk (error rate among answered questions) that sets the abstain threshold:
    /// 0.01, 0.05, 0.1 or 0.2.
    #[arg(long, default_value_t = 0.05)]
    risk: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Quantize the language model with HQQ to this many bits as it loads (2, 3, 4 or 8;
    /// Qwen2-VL checkpoints; otherwise use a package from `relvqa quantize`).
    #[arg(long)]
    hqq_bits: Option<u32>,
    /// HQQ group size (must divide every quantized linear's input dimension).
    #[arg(long, default_value_t = crate::quant::spec::DEFAULT_GROUP)]
    hqq_group: usize,
    /// Longest answer in tokens (Qwen2-VL; Idefics3 models keep their own limit, 8: the
    /// shapes model's answers are one word).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
}

/// The Selector and MaxProb calibration stored with the model in `dir` (either may be absent).
pub fn load_confidence(dir: &std::path::Path, hidden_size: usize) -> Result<Confidence> {
    let selector = store::load(dir)?;
    if let Some(s) = &selector {
        s.check_model(hidden_size)?;
    }
    Ok(Confidence {
        selector,
        maxprob_calibration: load_calibration(dir)?,
    })
}

/// Answer `question` about `px` and decide with the library's rule
/// ([`crate::selector::decision::decide`], the one the web page calls).
pub fn decide<B: Backend>(
    vqa: &Vqa<B>,
    conf: &Confidence,
    px: &HostTensor,
    question: &str,
    risk: f64,
) -> Result<Decision> {
    let t = Instant::now();
    let g = pollster::block_on(vqa.answer(px, question))?;
    let gen_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut d = decision::decide(g, conf, risk, vqa.backend.name())?;
    d.timings_ms["generate"] = gen_ms.into();
    Ok(d)
}

pub fn run(a: AskArgs) -> Result<()> {
    with_backend!(a.backend.backend, |b| run_on(b, &a))
}

/// Either family (the config's `model_type`), its own processor and chat template, the
/// library's decision rule: the path the page takes too.
fn run_on<B: Backend>(backend: B, a: &AskArgs) -> Result<()> {
    let t0 = Instant::now();
    let hqq = match a.hqq_bits {
        Some(bits) => Some((
            crate::quant::spec::QuantSpec::new(bits, a.hqq_group)?,
            crate::quant::hqq::HqqOptions::default(),
        )),
        None => None,
    };
    let mut m = AnyVqa::load_path(backend, &a.model.model, hqq)?;
    if let AnyVqa::Qwen2Vl(q) = &mut m {
        q.max_new_tokens = a.max_new_tokens;
    }
    let confidence = load_confidence(&a.model.model, m.hidden_size())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let bytes = std::fs::read(&a.image).map_err(|e| Error::io(a.image.display().to_string(), e))?;
    let img =
        decode_image(&bytes).map_err(|e| Error::Image(format!("{}: {e}", a.image.display())))?;
    let pre_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let g = pollster::block_on(m.answer_image(&img, &a.question))?;
    let gen_ms = t2.elapsed().as_secs_f64() * 1e3;
    let mut d = decision::decide(g, &confidence, a.risk, m.backend().name())?;
    d.timings_ms["generate"] = gen_ms.into();
    d.timings_ms["load"] = load_ms.into();
    d.timings_ms["preprocess"] = pre_ms.into();
    print_decision(a, &d)
}

fn print_decision(a: &AskArgs, d: &Decision) -> Result<()> {
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&d).map_err(|e| Error::Invalid(e.to_string()))?
        );
    } else {
        println!("{}", d.describe());
        if !d.calibrated {
            println!(
                "note: the model has no Selector or calibration.json, so no abstain threshold; \
                 run `relvqa selector train --model {}`",
                a.model.model.display()
            );
        }
    }
    Ok(())
}
