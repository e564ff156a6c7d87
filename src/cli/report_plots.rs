//! The report's plots: risk–coverage curves, accuracy and C@5% against bytes, and coverage
//! against the OOD share. Drawn by `report::plot` as SVG and PNG.

use std::path::Path;

use super::report::{Report, MAXPROB, SELECTOR, SELECTOR_F16};
use crate::error::{Error, Result};
use crate::metrics::CurvePoint;
use crate::report::plot::{write_chart, Chart, Mark, Series};

/// Curves have one point per distinct confidence (thousands); a plot needs a few hundred.
fn thin(curve: &[CurvePoint], max: usize) -> Vec<(f64, f64)> {
    let step = curve.len().div_ceil(max.max(1)).max(1);
    let mut pts: Vec<(f64, f64)> = curve
        .iter()
        .step_by(step)
        .map(|p| (p.coverage, p.risk))
        .collect();
    if let Some(last) = curve.last() {
        if pts.last() != Some(&(last.coverage, last.risk)) {
            pts.push((last.coverage, last.risk));
        }
    }
    pts
}

fn chart(title: &str, x: &str, y: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        series,
        x_log: false,
        x_range: None,
        y_range: None,
        label_points: false,
    }
}

fn series(name: String, points: Vec<(f64, f64)>, mark: Mark, dashed: bool) -> Series {
    Series {
        name,
        points,
        mark,
        dashed,
    }
}

pub fn write_all(r: &Report, out: &Path) -> Result<()> {
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::io(plots.display().to_string(), e))?;
    let id_pct = r.ood_percents.iter().copied().min().unwrap_or(0);

    // Risk–coverage at the most in-distribution mixture: all variants' Selectors in one chart,
    // and each variant's three confidence sources in its own.
    let mut all = Vec::new();
    for v in &r.variants {
        let Some(m) = v.mixtures.iter().find(|m| m.ood_percent == id_pct) else {
            continue;
        };
        let mut own = Vec::new();
        for (est, label, dashed) in [
            (SELECTOR, "Selector", false),
            (MAXPROB, "MaxProb", true),
            (SELECTOR_F16, "f16 Selector", true),
        ] {
            if let Some(e) = m.estimators.get(est) {
                own.push(series(
                    label.into(),
                    thin(&e.curve, 300),
                    Mark::Line,
                    dashed,
                ));
                if est == SELECTOR {
                    all.push(series(
                        v.variant.clone(),
                        thin(&e.curve, 300),
                        Mark::Line,
                        false,
                    ));
                }
            }
        }
        let mut c = chart(
            &format!("Risk–coverage, {} (OOD {id_pct}%)", v.variant),
            "coverage",
            "risk",
            own,
        );
        c.x_range = Some((0.0, 1.0));
        write_chart(&c, &plots, &format!("risk_coverage_{}", v.variant))?;
    }
    let mut c = chart(
        &format!("Risk–coverage with each variant's Selector (OOD {id_pct}%)"),
        "coverage",
        "risk",
        all,
    );
    c.x_range = Some((0.0, 1.0));
    write_chart(&c, out, "risk_coverage")?;

    // Accuracy and C@5% against bytes, one labelled point per variant.
    let mut acc = Vec::new();
    let mut c5_sel = Vec::new();
    let mut c5_mp = Vec::new();
    for v in &r.variants {
        let Some(m) = v.mixtures.iter().find(|m| m.ood_percent == id_pct) else {
            continue;
        };
        let mb = v.total_bytes as f64 / 1e6;
        acc.push((mb, m.accuracy * 100.0));
        let c5 = |est: &str| {
            m.estimators
                .get(est)
                .and_then(|e| e.coverage_at_risk.get(&5))
                .map(|c| c.coverage * 100.0)
        };
        if let Some(c) = c5(SELECTOR) {
            c5_sel.push((mb, c));
        }
        if let Some(c) = c5(MAXPROB) {
            c5_mp.push((mb, c));
        }
    }
    let mut c = chart(
        &format!("Accuracy and coverage at 5% risk against size (OOD {id_pct}%)"),
        "weights (MB)",
        "%",
        vec![
            series("accuracy".into(), acc, Mark::Points, false),
            series("C@5% Selector".into(), c5_sel, Mark::Points, false),
            series("C@5% MaxProb".into(), c5_mp, Mark::Points, true),
        ],
    );
    c.label_points = false;
    write_chart(&c, out, "bytes")?;
    write_labelled_bytes(r, id_pct, out)?;

    // Coverage at 5% risk as the OOD share grows.
    let mut lines = Vec::new();
    for v in &r.variants {
        // Every variant's Selector, and MaxProb only for f16: two lines per variant would
        // make a dozen variants unreadable.
        let ests: &[(&str, bool)] = if v.variant == "f16" {
            &[(SELECTOR, false), (MAXPROB, true)]
        } else {
            &[(SELECTOR, false)]
        };
        for &(est, dashed) in ests {
            let pts: Vec<(f64, f64)> = v
                .mixtures
                .iter()
                .filter_map(|m| {
                    let c = m.estimators.get(est)?.coverage_at_risk.get(&5)?;
                    Some((m.ood_percent as f64, c.coverage * 100.0))
                })
                .collect();
            if !pts.is_empty() {
                let label = if est == SELECTOR {
                    "Selector"
                } else {
                    "MaxProb"
                };
                lines.push(series(
                    format!("{} {label}", v.variant),
                    pts,
                    Mark::LinePoints,
                    dashed,
                ));
            }
        }
    }
    let mut c = chart(
        "Coverage at 5% risk against the OOD share",
        "OOD share of the test set (%)",
        "C@5% (%)",
        lines,
    );
    c.x_range = Some((0.0, 100.0));
    write_chart(&c, out, "ood_coverage")?;
    Ok(())
}

/// The same scatter with each variant's name beside its point (one series per variant, so
/// the labels are the variant names).
fn write_labelled_bytes(r: &Report, id_pct: u32, out: &Path) -> Result<()> {
    let pts: Vec<Series> = r
        .variants
        .iter()
        .filter_map(|v| {
            let m = v.mixtures.iter().find(|m| m.ood_percent == id_pct)?;
            let c = m.estimators.get(SELECTOR)?.coverage_at_risk.get(&5)?;
            Some(series(
                v.variant.clone(),
                vec![(v.total_bytes as f64 / 1e6, c.coverage * 100.0)],
                Mark::Points,
                false,
            ))
        })
        .collect();
    let mut c = chart(
        &format!("Selector coverage at 5% risk against size (OOD {id_pct}%)"),
        "weights (MB)",
        "C@5% (%)",
        pts,
    );
    c.label_points = true;
    write_chart(&c, out, "bytes_c5")?;
    Ok(())
}
