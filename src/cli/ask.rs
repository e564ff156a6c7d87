//! `relvqa ask`: answer one question about one image, with confidence and abstain decision.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::calibrate::load_calibration;
use super::ModelArg;
use crate::backend::cpu::CpuBackend;
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::model::generate::Vqa;
use crate::model::image::{decode_image, image_to_pixels};
use crate::selector::features::features;
use crate::selector::mlp::Selector;
use crate::selector::store;
use crate::selector::threshold::Calibration;

#[derive(clap::Args, Debug)]
pub struct AskArgs {
    #[command(flatten)]
    model: ModelArg,
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
}

/// An answer with its confidence and the abstain decision: the `--json` schema.
#[derive(Debug, Serialize)]
pub struct Decision {
    pub answer: String,
    pub confidence: f64,
    /// `selector` when the model ships a Selector, else `maxprob`.
    pub confidence_source: &'static str,
    pub abstain: bool,
    /// Threshold for `risk`; null when the model has no calibration or no threshold reaches it.
    pub threshold: Option<f64>,
    pub risk: f64,
    pub calibrated: bool,
    /// MaxProb beside the Selector, so the two can be compared on one answer.
    pub maxprob: f64,
    pub selector: Option<f64>,
    pub token_probs: Vec<f32>,
    pub timings_ms: serde_json::Value,
}

impl Decision {
    /// One line for people: the answer, or why there is none.
    pub fn describe(&self) -> String {
        if self.abstain {
            let t = self
                .threshold
                .map_or("every threshold".into(), |t| format!("{t:.3}"));
            format!(
                "abstain (would say `{}`): {} confidence {:.3} is below {t}, the threshold for {:.0}% risk",
                self.answer,
                self.confidence_source,
                self.confidence,
                self.risk * 100.0
            )
        } else {
            format!(
                "{}  (confidence {:.3}, {})",
                self.answer, self.confidence, self.confidence_source
            )
        }
    }
}

/// What decides whether to answer: the Selector with its own thresholds when the model ships
/// one, else MaxProb with `calibration.json`'s.
#[derive(Debug, Clone, Default)]
pub struct Confidence {
    pub selector: Option<Selector>,
    pub maxprob_calibration: Option<Calibration>,
}

impl Confidence {
    pub fn load(dir: &std::path::Path, hidden_size: usize) -> Result<Self> {
        let selector = store::load(dir)?;
        if let Some(s) = &selector {
            s.check_model(hidden_size)?;
        }
        Ok(Self {
            selector,
            maxprob_calibration: load_calibration(dir)?,
        })
    }
}

pub fn decide(
    vqa: &Vqa<CpuBackend>,
    conf: &Confidence,
    px: &HostTensor,
    question: &str,
    risk: f64,
) -> Result<Decision> {
    let t = Instant::now();
    let g = pollster::block_on(vqa.answer(px, question))?;
    let gen_ms = t.elapsed().as_secs_f64() * 1e3;
    let maxprob = g.maxprob() as f64;
    let selector = match &conf.selector {
        Some(s) => Some(s.confidence(&features(&g)?)? as f64),
        None => None,
    };
    let (confidence, source, cal) = match (&conf.selector, selector) {
        (Some(s), Some(c)) => (c, "selector", Some(&s.meta.calibration)),
        _ => (maxprob, "maxprob", conf.maxprob_calibration.as_ref()),
    };
    let (threshold, abstain) = match cal {
        Some(c) => (c.threshold(risk)?.threshold, c.abstain(confidence, risk)?),
        None => (None, false),
    };
    Ok(Decision {
        answer: g.text,
        confidence,
        confidence_source: source,
        abstain,
        threshold,
        risk,
        calibrated: cal.is_some(),
        maxprob,
        selector,
        token_probs: g.token_probs,
        timings_ms: serde_json::json!({ "generate": gen_ms }),
    })
}

pub fn run(a: AskArgs) -> Result<()> {
    let t0 = Instant::now();
    let vqa = a.model.load()?;
    let confidence = Confidence::load(&a.model.model, vqa.model.cfg.text_config.hidden_size)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let bytes = std::fs::read(&a.image).map_err(|e| Error::io(a.image.display().to_string(), e))?;
    let img =
        decode_image(&bytes).map_err(|e| Error::Image(format!("{}: {e}", a.image.display())))?;
    let px = image_to_pixels(&img, vqa.model.cfg.vision_config.image_size)?;
    let pre_ms = t1.elapsed().as_secs_f64() * 1e3;
    let mut d = decide(&vqa, &confidence, &px, &a.question, a.risk)?;
    d.timings_ms["load"] = load_ms.into();
    d.timings_ms["preprocess"] = pre_ms.into();
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
