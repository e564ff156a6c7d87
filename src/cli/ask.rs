//! `relvqa ask`: answer one question about one image.

use std::path::PathBuf;
use std::time::Instant;

use super::ModelArg;
use crate::error::{Error, Result};
use crate::model::image::{decode_image, image_to_pixels};

#[derive(clap::Args, Debug)]
pub struct AskArgs {
    #[command(flatten)]
    model: ModelArg,
    /// PNG or JPEG image.
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    question: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: AskArgs) -> Result<()> {
    let t0 = Instant::now();
    let vqa = a.model.load()?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let bytes = std::fs::read(&a.image).map_err(|e| Error::io(a.image.display().to_string(), e))?;
    let img =
        decode_image(&bytes).map_err(|e| Error::Image(format!("{}: {e}", a.image.display())))?;
    let px = image_to_pixels(&img, vqa.model.cfg.vision_config.image_size)?;
    let pre_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let g = pollster::block_on(vqa.answer(&px, &a.question))?;
    let gen_ms = t2.elapsed().as_secs_f64() * 1e3;
    let confidence = g.maxprob();
    if a.json {
        let out = serde_json::json!({
            "answer": g.text,
            "confidence": confidence,
            "confidence_source": "maxprob",
            "abstain": false,
            "threshold": null,
            "token_probs": g.token_probs,
            "timings_ms": {"load": load_ms, "preprocess": pre_ms, "generate": gen_ms},
        });
        println!("{out}");
    } else {
        println!("{}  (confidence {:.3}, maxprob)", g.text, confidence);
    }
    Ok(())
}
