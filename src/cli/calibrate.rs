//! `relvqa calibrate`: choose MaxProb abstention thresholds on the `val` split and store them in
//! the model directory as `calibration.json`, where `ask` finds them.

use std::path::Path;

use super::ModelArg;
use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::eval::accuracy::EvalReport;
use crate::eval::shapes::Split;
use crate::model::generate::Vqa;
use crate::selector::threshold::{Calibration, CALIBRATION_FILE};

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Questions of the val split to calibrate on.
    #[arg(long, default_value_t = 2000)]
    limit: usize,
}

pub fn calibrate(
    vqa: &Vqa<CpuBackend>,
    dir: &Path,
    limit: usize,
) -> Result<(Calibration, EvalReport)> {
    let report = super::eval::evaluate_with_progress(vqa, Split::Val, limit)?;
    let conf: Vec<f64> = report
        .predictions
        .iter()
        .map(|p| p.maxprob as f64)
        .collect();
    let acc: Vec<f64> = report
        .predictions
        .iter()
        .map(|p| if p.correct { 1.0 } else { 0.0 })
        .collect();
    let cal = Calibration::fit("maxprob", Split::Val.name(), &conf, &acc)?;
    let p = dir.join(CALIBRATION_FILE);
    let text = serde_json::to_string_pretty(&cal).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
    Ok((cal, report))
}

pub fn print_calibration(c: &Calibration) {
    println!(
        "{} thresholds on {} ({} questions, accuracy {:.2}%):",
        c.confidence_source,
        c.split,
        c.n,
        c.accuracy * 100.0
    );
    for (k, t) in &c.thresholds {
        let th = t
            .threshold
            .map_or("abstain always".to_string(), |t| format!("{t:.4}"));
        println!(
            "  risk {k:>2}%: threshold {th}, coverage {:.1}%, risk {:.2}%",
            t.coverage * 100.0,
            t.risk * 100.0
        );
    }
    for (c, t) in &c.phi {
        let th = t
            .threshold
            .map_or("abstain always".to_string(), |t| format!("{t:.4}"));
        println!("  best Phi_{c}: threshold {th}, Phi {:.2}%", t.phi * 100.0);
    }
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let vqa = a.model.load()?;
    let (cal, _) = calibrate(&vqa, &a.model.model, a.limit)?;
    print_calibration(&cal);
    println!("wrote {}", a.model.model.join(CALIBRATION_FILE).display());
    Ok(())
}

/// The calibration stored beside a model, if any.
pub fn load_calibration(dir: &Path) -> Result<Option<Calibration>> {
    let p = dir.join(CALIBRATION_FILE);
    if !p.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
    Calibration::from_json_bytes(&bytes)
        .map(Some)
        .map_err(|e| match e {
            Error::Model { msg, .. } => Error::Model {
                path: p.display().to_string(),
                msg,
            },
            other => other,
        })
}
