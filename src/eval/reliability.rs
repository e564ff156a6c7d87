//! Reliability of answered questions under ID;OOD mixtures: the numbers of the report, computed
//! from scored answers. Shared by `relvqa eval --out` and the browser benchmark (`www/bench.html`
//! through `src/web_bench.rs`), so the page and the CLI compute every metric with the same code.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ood::mixture;
use super::predict::{Scored, Selectors};
use crate::error::{Error, Result};
use crate::metrics::{self, CoverageAtRisk, CurvePoint, PhiReport, PHI_COSTS};

/// The confidence sources a report compares.
pub const MAXPROB: &str = "maxprob";
pub const SELECTOR: &str = "selector";
/// The f16 model's Selector applied to a quantized variant.
pub const SELECTOR_F16: &str = "selector_f16";

/// Metrics of one confidence source on one test set (the curve lives in the plots and can be
/// recomputed from `predictions.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct EstimatorMetrics {
    pub auc: f64,
    pub coverage_at_risk: BTreeMap<u32, CoverageAtRisk>,
    /// Keyed by the cost `c` (1, 10, 100); threshold chosen on ID val.
    pub phi: BTreeMap<u32, PhiReport>,
    pub ece: f64,
    pub note: Option<String>,
    /// The risk-coverage curve (not in report.json: plots and predictions carry it).
    #[serde(skip)]
    pub curve: Vec<CurvePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixtureResult {
    pub ood_percent: u32,
    pub n: usize,
    pub n_ood: usize,
    pub accuracy: f64,
    pub estimators: BTreeMap<String, EstimatorMetrics>,
    /// Where the CLI wrote this mixture's answers (empty elsewhere).
    pub predictions: String,
}

pub fn confidences(s: &[Scored], est: &str) -> Option<Vec<f64>> {
    s.iter()
        .map(|x| match est {
            MAXPROB => Some(x.maxprob),
            SELECTOR => x.selector,
            _ => x.selector_f16,
        })
        .collect()
}

pub fn accs(s: &[Scored]) -> Vec<f64> {
    s.iter().map(|x| x.acc).collect()
}

pub fn estimator_metrics(
    val: &[Scored],
    test: &[Scored],
    est: &str,
) -> Result<Option<EstimatorMetrics>> {
    let (Some(vc), Some(tc)) = (confidences(val, est), confidences(test, est)) else {
        return Ok(None);
    };
    let (va, ta) = (accs(val), accs(test));
    let s = metrics::summarize(&tc, &ta)?;
    let mut phi = BTreeMap::new();
    for c in PHI_COSTS {
        phi.insert(c as u32, metrics::phi_report(&vc, &va, &tc, &ta, c)?);
    }
    Ok(Some(EstimatorMetrics {
        auc: s.auc,
        coverage_at_risk: s.coverage_at_risk,
        phi,
        ece: s.ece,
        note: s.note,
        curve: s.curve,
    }))
}

pub fn apply_selectors(s: &mut [Scored], sel: Selectors<'_>) -> Result<()> {
    for x in s.iter_mut() {
        if let Some(own) = sel.own {
            x.selector = Some(own.confidence(&x.features)? as f64);
        }
        if let Some(f16) = sel.f16 {
            x.selector_f16 = Some(f16.confidence(&x.features)? as f64);
        }
    }
    Ok(())
}

/// The test set at `ood_percent`% OOD: question `i` is `ood[i]` where the nested mixture says
/// so, else `id[i]`.
pub fn mixed(id: &[Scored], ood: &[Scored], ood_percent: u32) -> Result<(Vec<Scored>, usize)> {
    if id.len() != ood.len() {
        return Err(Error::Invalid(format!(
            "{} ID answers but {} OOD answers; a mixture pairs them question by question",
            id.len(),
            ood.len()
        )));
    }
    let mask = mixture(id.len(), ood_percent)?;
    let rows = mask
        .iter()
        .zip(id.iter().zip(ood))
        .map(|(m, (a, b))| if *m { b.clone() } else { a.clone() })
        .collect();
    Ok((rows, mask.iter().filter(|m| **m).count()))
}

/// Accuracy and every estimator's metrics on one mixture; Phi thresholds come from `val`.
pub fn mixture_result(
    val: &[Scored],
    rows: &[Scored],
    ood_percent: u32,
    n_ood: usize,
) -> Result<MixtureResult> {
    let mut estimators = BTreeMap::new();
    for est in [MAXPROB, SELECTOR, SELECTOR_F16] {
        if let Some(m) = estimator_metrics(val, rows, est)? {
            estimators.insert(est.to_string(), m);
        }
    }
    Ok(MixtureResult {
        ood_percent,
        n: rows.len(),
        n_ood,
        accuracy: rows.iter().map(|r| r.acc).sum::<f64>() / rows.len().max(1) as f64,
        estimators,
        predictions: String::new(),
    })
}
