//! Choosing an abstention threshold on a calibration split for a target risk.
//!
//! Risk at threshold `t` is the error rate among questions answered with confidence `>= t`.
//! Questions with equal confidence are answered or abstained together (a threshold cannot split
//! a tie), so thresholds only fall between distinct confidence values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{best_phi_threshold, coverage_at_risk, PHI_COSTS};

pub const CALIBRATION_FILE: &str = "calibration.json";
/// Target risks a calibration stores thresholds for.
pub const TARGET_RISKS: [f64; 4] = [0.01, 0.05, 0.10, 0.20];

/// Lowest threshold whose answered set has risk `<= target` (maximal coverage). Returns
/// `(threshold, coverage, risk)`; `None` when even the most confident tie group is too risky
/// (abstain on everything, coverage 0). A thin wrapper so the calibration stored beside the
/// weights and the reported C@R are one computation
/// ([`coverage_at_risk`](crate::metrics::coverage_at_risk)).
pub fn threshold_for_risk(
    conf: &[f32],
    correct: &[bool],
    target: f64,
) -> Result<(Option<f32>, f64, f64)> {
    let conf: Vec<f64> = conf.iter().map(|&c| f64::from(c)).collect();
    let acc: Vec<f64> = correct.iter().map(|&ok| f64::from(u8::from(ok))).collect();
    let c = coverage_at_risk(&conf, &acc, target)?;
    // The threshold is one of the f32 inputs widened, so narrowing it back is exact.
    Ok((c.threshold.map(|t| t as f32), c.coverage, c.risk))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskThreshold {
    /// Answer when confidence `>=` this; `None`: no threshold reaches the risk, always abstain.
    pub threshold: Option<f64>,
    /// Coverage and risk on the calibration split at that threshold.
    pub coverage: f64,
    pub risk: f64,
}

/// The threshold that maximised effective reliability Phi_c on the calibration split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhiThreshold {
    /// `None`: abstaining on everything scored best.
    pub threshold: Option<f64>,
    pub phi: f64,
}

/// Thresholds of one confidence source, chosen on one split; stored beside the weights.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub confidence_source: String,
    pub split: String,
    pub n: usize,
    pub accuracy: f64,
    /// Keyed by the target risk in whole percent (1, 5, 10, 20).
    pub thresholds: BTreeMap<u32, RiskThreshold>,
    /// Keyed by the cost `c` of a wrong answer (1, 10, 100). Absent in files written before
    /// Phi thresholds existed.
    #[serde(default)]
    pub phi: BTreeMap<u32, PhiThreshold>,
}

pub fn risk_key(risk: f64) -> u32 {
    (risk * 100.0).round().clamp(0.0, 100.0) as u32
}

impl Calibration {
    /// Parse the bytes of a `calibration.json`.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Model {
            path: CALIBRATION_FILE.into(),
            msg: format!("calibration.json is invalid: {e}; rerun `relvqa calibrate`"),
        })
    }

    /// Thresholds for every target risk and every Phi cost, from confidences and VQA
    /// accuracies on the calibration split.
    pub fn fit(source: &str, split: &str, conf: &[f64], acc: &[f64]) -> Result<Self> {
        let mut thresholds = BTreeMap::new();
        for r in TARGET_RISKS {
            let c = coverage_at_risk(conf, acc, r)?;
            thresholds.insert(
                risk_key(r),
                RiskThreshold {
                    threshold: c.threshold,
                    coverage: c.coverage,
                    risk: c.risk,
                },
            );
        }
        let mut phi = BTreeMap::new();
        for c in PHI_COSTS {
            let (threshold, value) = best_phi_threshold(conf, acc, c)?;
            phi.insert(
                c as u32,
                PhiThreshold {
                    threshold,
                    phi: value,
                },
            );
        }
        Ok(Self {
            confidence_source: source.into(),
            split: split.into(),
            n: conf.len(),
            accuracy: acc.iter().sum::<f64>() / acc.len().max(1) as f64,
            thresholds,
            phi,
        })
    }

    /// Whether to abstain on an answer of confidence `conf` at target `risk`.
    pub fn abstain(&self, conf: f64, risk: f64) -> Result<bool> {
        Ok(match self.threshold(risk)?.threshold {
            Some(t) => conf < t,
            None => true,
        })
    }

    pub fn threshold(&self, risk: f64) -> Result<&RiskThreshold> {
        self.thresholds.get(&risk_key(risk)).ok_or_else(|| {
            let have: Vec<&u32> = self.thresholds.keys().collect();
            Error::Invalid(format!(
                "no threshold calibrated for {}% risk; available: {have:?} (percent)",
                risk_key(risk)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_largest_coverage_within_risk() {
        // Sorted: 0.9 ok, 0.8 ok, 0.7 wrong, 0.6 ok, 0.5 wrong.
        let conf = [0.5, 0.9, 0.7, 0.6, 0.8];
        let ok = [false, true, false, true, true];
        assert_eq!(
            threshold_for_risk(&conf, &ok, 0.0).unwrap(),
            (Some(0.8), 0.4, 0.0)
        );
        let (t, cov, risk) = threshold_for_risk(&conf, &ok, 0.25).unwrap();
        assert_eq!((t, cov, risk), (Some(0.6), 0.8, 0.25));
        assert_eq!(threshold_for_risk(&conf, &ok, 1.0).unwrap().1, 1.0);
    }

    #[test]
    fn ties_are_never_split() {
        // The top tie group holds one error in three: at 0% risk nothing can be answered.
        let conf = [0.9, 0.9, 0.9, 0.1];
        let ok = [true, false, true, true];
        let (t, cov, _) = threshold_for_risk(&conf, &ok, 0.0).unwrap();
        assert!(t.is_none() && cov == 0.0);
        let (t, cov, risk) = threshold_for_risk(&conf, &ok, 0.34).unwrap();
        assert_eq!((t, cov), (Some(0.1), 1.0));
        assert!((risk - 0.25).abs() < 1e-12);
    }

    #[test]
    fn mismatched_inputs_are_an_error() {
        assert!(threshold_for_risk(&[0.5], &[true, false], 0.1).is_err());
        assert!(threshold_for_risk(&[], &[], 0.1).is_err());
    }
}
