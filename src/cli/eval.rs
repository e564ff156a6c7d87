//! `relvqa eval`: accuracy on a shapes split.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use super::{with_backend, BackendArg, ModelArg};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::eval::accuracy::{evaluate, EvalReport};
use crate::eval::ood::EasyVqa;
use crate::eval::shapes::Split;
use crate::model::generate::Vqa;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// train, dev, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Number of questions (default: the split's size).
    #[arg(long)]
    limit: Option<usize>,
    /// Write the report (with every prediction) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compare variants of the model, e.g. `f16,rtn4,hqq4,mbq4,hqq3,mbq3,hqq2,mbq2`; missing
    /// packages are built first (under --work).
    #[arg(long)]
    variants: Option<String>,
    /// Where `--variants` keeps the packages it builds.
    #[arg(long, default_value = "target/variants")]
    work: PathBuf,
    /// Write the reliability report (report.json, report.md, plots, predictions) into this
    /// directory: Selectors, risk-coverage metrics and OOD mixtures for every variant.
    #[arg(long)]
    out: Option<PathBuf>,
    /// OOD shares of the test mixtures, in percent (with --out).
    #[arg(long, default_value = "0,25,50,75,100")]
    ood: String,
    /// Val questions for thresholds (with --out).
    #[arg(long, default_value_t = 2000)]
    val: usize,
    /// Dev questions a missing Selector is trained on (with --out).
    #[arg(long, default_value_t = 4000)]
    dev: usize,
    /// The easy-VQA data directory (default: $RELVQA_EASY_VQA or .cache/easy-vqa/easy_vqa/data,
    /// where `make easy-vqa` installs it).
    #[arg(long)]
    easy_vqa: Option<PathBuf>,
}

/// Greedy-answer the first `n` questions of `split` behind a progress bar (all commands that
/// evaluate share this).
pub fn evaluate_with_progress<B: Backend>(
    vqa: &Vqa<B>,
    split: Split,
    n: usize,
) -> Result<EvalReport> {
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
    with_backend!(a.backend.backend, |b| run_on(b, &a))
}

fn run_on<B: Backend>(backend: B, a: &EvalArgs) -> Result<()>
where
    Vqa<B>: Sync,
{
    let split = Split::parse(&a.split)?;
    let n = a.limit.unwrap_or(split.default_len());
    if n == usize::MAX {
        return Err(Error::Invalid(
            "the train split is unbounded; pass --limit".into(),
        ));
    }
    if let Some(out) = &a.out {
        if split != Split::Test {
            return Err(Error::Invalid(
                "the report (--out) always scores the test split; drop --split".into(),
            ));
        }
        let o = super::report::ReportOptions {
            model: a.model.model.clone(),
            variants: a.variants.clone().unwrap_or_else(|| "f16".into()),
            work: a.work.clone(),
            test_n: n,
            val_n: a.val,
            dev_n: a.dev,
            ood: super::report::parse_ood(&a.ood)?,
            out: out.clone(),
            easy_vqa: a.easy_vqa.clone().unwrap_or_else(EasyVqa::default_dir),
        };
        super::report::run(&backend, &o)?;
        return Ok(());
    }
    if let Some(v) = &a.variants {
        let rows = super::variants::run(&backend, &a.model.model, v, &a.work, split, n)?;
        super::variants::print_table(&rows);
        if let Some(p) = &a.json {
            write_json(p, &rows)?;
        }
        return Ok(());
    }
    let vqa = a.model.load_on(backend)?;
    let r = evaluate_with_progress(&vqa, split, n)?;
    print_report(&r);
    println!(
        "  (image-blind baseline, each family's most common answer: {:.2}%)",
        crate::eval::accuracy::prior_only_accuracy(split, n) * 100.0
    );
    if let Some(p) = &a.json {
        write_json(p, &r)?;
    }
    Ok(())
}

fn write_json(p: &std::path::Path, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
    println!("wrote {}", p.display());
    Ok(())
}
