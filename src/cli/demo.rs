//! `relvqa demo`: answer the first few test-split questions, showing the true answer beside
//! the model's answer, its confidence and the abstain decision.

use std::path::PathBuf;

use super::ask::{decide, load_confidence};
use super::ModelArg;
use crate::error::{Error, Result};
use crate::eval::shapes::{self, Split};
use crate::model::image::image_to_pixels;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    model: ModelArg,
    #[arg(long, default_value_t = 6)]
    n: u64,
    #[arg(long, default_value_t = 0.05)]
    risk: f64,
    /// Also save the images here (PNG), so they can be opened.
    #[arg(long, default_value = "target/demo")]
    out: PathBuf,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let vqa = a.model.load()?;
    let conf = load_confidence(&a.model.model, vqa.model.cfg.text_config.hidden_size)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(a.out.display().to_string(), e))?;
    println!(
        "model {} ({}), risk target {:.0}%\n",
        a.model.model.display(),
        match (&conf.selector, &conf.maxprob_calibration) {
            (Some(_), _) => "confidence from its Selector",
            (None, Some(_)) => "confidence from MaxProb",
            (None, None) => "uncalibrated",
        },
        a.risk * 100.0
    );
    for i in 0..a.n {
        let s = shapes::sample(Split::Test, i);
        let p = a.out.join(format!("test_{i:05}.png"));
        s.image
            .save(&p)
            .map_err(|e| Error::Image(format!("{}: {e}", p.display())))?;
        let px = image_to_pixels(&s.image, vqa.model.cfg.vision_config.image_size)?;
        let d = decide(&vqa, &conf, &px, &s.question.text, a.risk)?;
        println!(
            "{}\n  Q: {}  (true answer: {})\n  A: {}\n",
            p.display(),
            s.question.text,
            s.question.answer,
            d.describe()
        );
    }
    Ok(())
}
