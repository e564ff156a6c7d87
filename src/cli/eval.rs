//! `relvqa eval`: accuracy on a shapes split.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArg;
use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::eval::accuracy::{evaluate, EvalReport};
use crate::eval::shapes::Split;
use crate::model::generate::Vqa;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArg,
    /// train, dev, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Number of questions (default: the split's size).
    #[arg(long)]
    limit: Option<usize>,
    /// Write the report (with every prediction) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Greedy-answer the first `n` questions of `split` behind a progress bar (all commands that
/// evaluate share this).
pub fn evaluate_with_progress(vqa: &Vqa<CpuBackend>, split: Split, n: usize) -> Result<EvalReport> {
    let pb = ProgressBar::new(n as u64);
    if let Ok(s) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec}")
    {
        pb.set_style(s);
    }
    let r = pollster::block_on(evaluate(vqa, split, n, |_| pb.inc(1)));
    pb.finish_and_clear();
    r
}

pub fn print_report(r: &EvalReport) {
    println!(
        "split {}: {} questions, accuracy {:.2}%",
        r.split,
        r.n,
        r.accuracy * 100.0
    );
    for (f, s) in &r.per_family {
        println!("  {f:<12} {:>5}  {:>6.2}%", s.n, s.accuracy * 100.0);
    }
}

pub fn run(a: EvalArgs) -> Result<()> {
    let split = Split::parse(&a.split)?;
    let n = a.limit.unwrap_or(split.default_len());
    if n == usize::MAX {
        return Err(Error::Invalid(
            "the train split is unbounded; pass --limit".into(),
        ));
    }
    let vqa = a.model.load()?;
    let r = evaluate_with_progress(&vqa, split, n)?;
    print_report(&r);
    println!(
        "  (image-blind baseline, each family's most common answer: {:.2}%)",
        crate::eval::accuracy::prior_only_accuracy(split, n) * 100.0
    );
    if let Some(p) = a.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
