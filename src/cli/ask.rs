//! `relvqa ask`: answer one question about one image, with confidence and abstain decision.

use std::path::PathBuf;
use std::time::Instant;

use super::calibrate::load_calibration;
use super::{with_backend, BackendArg, ModelArg};
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::arch::Architecture;
use crate::model::generate::Vqa;
use crate::model::idefics3::processor::{preprocess, ProcessedImage, ProcessorOptions};
use crate::model::image::{decode_image, image_to_pixels};
use crate::model::loader::PREPROCESSOR_FILE;
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
    /// Longest answer in tokens (Qwen2-VL; the shapes model's answers are one word).
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

fn run_on<B: Backend>(backend: B, a: &AskArgs) -> Result<()> {
    if let Ok(Architecture::Qwen2Vl) = crate::model::loader::architecture_of(&a.model.model) {
        return run_qwen2vl(backend, a);
    }
    if a.hqq_bits.is_some() {
        return Err(Error::Invalid(
            "--hqq-bits quantizes Qwen2-VL checkpoints as they load; for an Idefics3 model, \
             build a package with `relvqa quantize --method hqq` and pass it as --model"
                .into(),
        ));
    }
    let t0 = Instant::now();
    let mut vqa = a.model.load_on(backend)?;
    // The prompt comes from the checkpoint's chat template when it ships one that places an
    // image (real SmolVLM's); otherwise SmolVLM's format, built in.
    vqa.chat = super::text::chat_template(&a.model.model)?.filter(|t| t.takes_images());
    let confidence = load_confidence(&a.model.model, vqa.model.cfg.text_config.hidden_size)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let img = read_image(&a.image)?;
    // A real SmolVLM / Idefics3 checkpoint: its processor's tiles and tiled prompt; otherwise
    // one image resized to the model's input, which is an unsplit processed image.
    let image = match tiling_processor(&a.model.model)? {
        Some(opts) => preprocess(&img, &opts)?,
        None => ProcessedImage {
            pixels: image_to_pixels(&img, vqa.model.cfg.vision_config.image_size)?,
            rows: 0,
            cols: 0,
        },
    };
    let pre_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let g = pollster::block_on(vqa.answer_processed(&image, &a.question))?;
    let gen_ms = t2.elapsed().as_secs_f64() * 1e3;
    let mut d = decision::decide(g, &confidence, a.risk, vqa.backend.name())?;
    d.timings_ms["generate"] = gen_ms.into();
    d.timings_ms["load"] = load_ms.into();
    d.timings_ms["preprocess"] = pre_ms.into();
    print_decision(a, &d)
}

/// A PNG or JPEG file, decoded; errors name the file.
fn read_image(path: &std::path::Path) -> Result<image::RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    decode_image(&bytes).map_err(|e| Error::Image(format!("{}: {e}", path.display())))
}

/// The checkpoint's image processor when it splits images into tiles (`preprocessor_config.json`
/// with `do_image_splitting`, as real SmolVLM / Idefics3 checkpoints ship). Without one the
/// model sees one image resized to its input size: the shapes model's processor does exactly
/// that for its square images (`do_image_splitting: false`), and the page does the same.
fn tiling_processor(dir: &std::path::Path) -> Result<Option<ProcessorOptions>> {
    let Some(bytes) = crate::package::read_model_file(dir, PREPROCESSOR_FILE)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{PREPROCESSOR_FILE} is not UTF-8")))?;
    let opts = ProcessorOptions::from_preprocessor_json(&text)?;
    Ok(opts.split.then_some(opts))
}

/// A Qwen2-VL checkpoint or package: its own processor and chat template, the same decision
/// rule. (An unreadable directory falls through to the Idefics3 loader, which says why.)
fn run_qwen2vl<B: Backend>(backend: B, a: &AskArgs) -> Result<()> {
    let t0 = Instant::now();
    let hqq = match a.hqq_bits {
        Some(bits) => Some((
            crate::quant::spec::QuantSpec::new(bits, a.hqq_group)?,
            crate::quant::hqq::HqqOptions::default(),
        )),
        None => None,
    };
    let m = crate::model::qwen2vl::loader::load_path(backend, &a.model.model, hqq)?;
    let confidence = load_confidence(&a.model.model, m.model.cfg.text.hidden_size)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let img = read_image(&a.image)?;
    let inputs = m.inputs(&img, &a.question)?;
    let pre_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let g = pollster::block_on(m.answer(&inputs, a.max_new_tokens))?;
    let gen_ms = t2.elapsed().as_secs_f64() * 1e3;
    let mut d = decision::decide(g, &confidence, a.risk, m.backend.name())?;
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
