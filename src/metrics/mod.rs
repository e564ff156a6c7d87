//! Reliability metrics of selective VQA (Whitehead et al. 2022, facebookresearch/reliable_vqa):
//! risk–coverage curve and its AUC, coverage at risk, effective reliability Phi_c, and ECE.
//!
//! No model dependency, so the same code scores a run natively and in the browser. Every
//! function validates its inputs and returns [`Error::Metrics`] rather than panicking: the
//! inputs come from prediction files a user hands us.
//!
//! `tools/metrics_reference.py` is an independent brute-force implementation; `tests/metrics.rs`
//! checks the two agree on random data.

pub mod accuracy;
pub mod ece;
pub mod phi;
pub mod risk;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use accuracy::{normalize_answer, vqa_accuracy};
pub use ece::{expected_calibration_error, ECE_BINS};
pub use phi::{
    best_phi_threshold, best_possible_phi, phi, phi_no_abstention, phi_report, PhiReport,
};
pub use risk::{
    coverage_at_risk, risk_coverage_auc, risk_coverage_curve, CoverageAtRisk, CurvePoint,
};

/// Target risks for C@R, in whole percent (the paper's 1, 5, 10 and 20%).
pub const RISKS_PERCENT: [u32; 4] = [1, 5, 10, 20];
/// Costs `c` of a wrong answer for effective reliability Phi_c (the paper's 1, 10, 100).
pub const PHI_COSTS: [f64; 3] = [1.0, 10.0, 100.0];

/// Slack on `risk <= target`: soft accuracies such as 2/3 are not representable, so a set whose
/// true risk is exactly the target can sum to one ulp above it, and the answer would then depend
/// on summation order. Far below any risk difference one question can make (1/N).
pub const RISK_SLACK: f64 = 1e-12;

/// The threshold-free metrics of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    /// Mean VQA accuracy over all questions (coverage 1).
    pub accuracy: f64,
    /// Area under the risk–coverage curve, as a fraction (reliable_vqa prints it ×100).
    pub auc: f64,
    /// Keyed by the target risk in whole percent ([`RISKS_PERCENT`]).
    pub coverage_at_risk: BTreeMap<u32, CoverageAtRisk>,
    pub ece: f64,
    pub curve: Vec<CurvePoint>,
    /// Set when the data is degenerate (all right, all wrong, one tie group): the numbers stay
    /// defined but say little about the confidence, and a reader of a report must be told.
    pub note: Option<String>,
}

/// All threshold-free metrics of one split. Confidences must be probabilities in [0, 1]
/// because ECE is part of it; the [`risk`] functions alone accept any finite score.
pub fn summarize(conf: &[f64], acc: &[f64]) -> Result<Summary> {
    check_inputs(conf, acc)?;
    let n = conf.len();
    let curve = risk_coverage_curve(conf, acc)?;
    let mut at_risk = BTreeMap::new();
    for r in RISKS_PERCENT {
        at_risk.insert(r, coverage_at_risk(conf, acc, f64::from(r) / 100.0)?);
    }
    Ok(Summary {
        n,
        accuracy: acc.iter().sum::<f64>() / n as f64,
        auc: risk_coverage_auc(conf, acc)?,
        coverage_at_risk: at_risk,
        ece: expected_calibration_error(conf, acc)?,
        note: degenerate_note(acc, curve.len()),
        curve,
    })
}

fn degenerate_note(acc: &[f64], groups: usize) -> Option<String> {
    let mut notes = Vec::new();
    if acc.iter().all(|&a| a == 1.0) {
        notes.push(
            "every answer is right: risk is 0 at every coverage (AUC 0, every C@R 100%), \
             so these numbers do not test the confidence",
        );
    } else if acc.iter().all(|&a| a == 0.0) {
        notes.push(
            "every answer is wrong: risk is 1 at every coverage and no C@R target is reachable, \
             so these numbers do not test the confidence",
        );
    }
    if groups == 1 {
        notes.push(
            "all confidences are equal: one tie group, so the curve has one point \
             (coverage 1) and the confidence cannot rank answers",
        );
    }
    if acc.len() == 1 {
        notes.push("one question: the AUC integrates over no width and is 0");
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The checks every metric shares. Messages name the first bad index so a user can find the
/// line in a predictions file.
pub(crate) fn check_inputs(conf: &[f64], acc: &[f64]) -> Result<()> {
    if conf.len() != acc.len() {
        return Err(Error::Metrics(format!(
            "{} confidences but {} accuracies; they must pair up one per question",
            conf.len(),
            acc.len()
        )));
    }
    check_acc(acc)?;
    if let Some(i) = conf.iter().position(|c| !c.is_finite()) {
        return Err(Error::Metrics(format!(
            "confidence of question {i} is {}; confidences must be finite",
            conf[i]
        )));
    }
    Ok(())
}

/// Accuracy-only checks, for the metrics that ignore confidence (oracle and no-abstention Phi).
pub(crate) fn check_acc(acc: &[f64]) -> Result<()> {
    if acc.is_empty() {
        return Err(Error::Metrics("empty split: no questions to score".into()));
    }
    if let Some(i) = acc.iter().position(|a| !(0.0..=1.0).contains(a)) {
        return Err(Error::Metrics(format!(
            "accuracy of question {i} is {}; VQA accuracy must lie in [0, 1]",
            acc[i]
        )));
    }
    Ok(())
}

/// One set of questions sharing a confidence. A threshold answers or abstains on all of them
/// together, so every metric walks these, most confident first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TieGroup {
    pub conf: f64,
    pub count: usize,
    /// Sum of accuracies in the group.
    pub acc_sum: f64,
    /// Sum of the accuracies that are > 0: what the group adds to Phi_c before its cost term.
    pub positive_acc_sum: f64,
    /// Questions with accuracy exactly 0 (each costs `c` under Phi_c).
    pub zero_count: usize,
}

/// Tie groups in descending confidence. Inputs must have passed [`check_inputs`].
pub(crate) fn tie_groups(conf: &[f64], acc: &[f64]) -> Vec<TieGroup> {
    let mut order: Vec<usize> = (0..conf.len()).collect();
    // total_cmp keeps -0.0 and 0.0 adjacent, and `==` below then merges them.
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
    let mut groups: Vec<TieGroup> = Vec::new();
    for i in order {
        let (c, a) = (conf[i], acc[i]);
        match groups.last_mut() {
            Some(g) if g.conf == c => g.add(a),
            _ => {
                let mut g = TieGroup {
                    conf: c,
                    count: 0,
                    acc_sum: 0.0,
                    positive_acc_sum: 0.0,
                    zero_count: 0,
                };
                g.add(a);
                groups.push(g);
            }
        }
    }
    groups
}

impl TieGroup {
    fn add(&mut self, a: f64) {
        self.count += 1;
        self.acc_sum += a;
        if a > 0.0 {
            self.positive_acc_sum += a;
        } else {
            self.zero_count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_small_split() {
        // conf 0.9 (acc 1), 0.5 (acc 0), 0.5 (acc 1), 0.1 (acc 0): groups {0.9}, {0.5 x2}, {0.1}.
        let conf = [0.9, 0.5, 0.5, 0.1];
        let acc = [1.0, 0.0, 1.0, 0.0];
        let s = summarize(&conf, &acc).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.accuracy, 0.5);
        assert_eq!(s.curve.len(), 3);
        assert_eq!(s.coverage_at_risk[&1].coverage, 0.25);
        // Risk 1/3 at coverage 3/4 is above 20%, so C@20 stays at the first group.
        assert_eq!(s.coverage_at_risk[&20].coverage, 0.25);
        assert!(s.note.is_none());
    }

    #[test]
    fn degenerate_splits_say_so() {
        let all_right = summarize(&[0.9, 0.2, 0.5], &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(all_right.auc, 0.0);
        assert_eq!(all_right.coverage_at_risk[&1].coverage, 1.0);
        assert!(all_right.note.unwrap().contains("every answer is right"));

        let all_wrong = summarize(&[0.9, 0.2, 0.5], &[0.0, 0.0, 0.0]).unwrap();
        assert!(all_wrong
            .coverage_at_risk
            .values()
            .all(|c| c.coverage == 0.0));
        assert!(all_wrong.note.unwrap().contains("every answer is wrong"));

        // One tie group: a single curve point, and a note.
        let flat = summarize(&[0.4, 0.4, 0.4, 0.4], &[1.0, 0.0, 1.0, 1.0]).unwrap();
        assert_eq!(flat.curve.len(), 1);
        assert_eq!(flat.curve[0].coverage, 1.0);
        assert!(flat.note.unwrap().contains("all confidences are equal"));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let msg = |r: Result<Summary>| match r {
            Err(Error::Metrics(m)) => m,
            other => format!("unexpected {other:?}"),
        };
        assert!(msg(summarize(&[0.5], &[1.0, 0.0])).contains("1 confidences but 2"));
        assert!(msg(summarize(&[], &[])).contains("empty split"));
        assert!(msg(summarize(&[0.5, f64::NAN], &[1.0, 0.0])).contains("question 1"));
        assert!(msg(summarize(&[0.5, f64::INFINITY], &[1.0, 0.0])).contains("finite"));
        assert!(msg(summarize(&[0.5, 0.2], &[1.5, 0.0])).contains("question 0"));
        assert!(msg(summarize(&[0.5, 0.2], &[1.0, f64::NAN])).contains("[0, 1]"));
        // ECE needs probabilities.
        assert!(msg(summarize(&[0.5, 1.2], &[1.0, 0.0])).contains("[0, 1]"));
    }

    #[test]
    fn ties_group_and_signed_zeros_merge() {
        let g = tie_groups(&[0.0, 0.7, -0.0, 0.7], &[1.0, 0.0, 0.5, 1.0]);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].conf, g[0].count, g[0].zero_count), (0.7, 2, 1));
        assert_eq!((g[1].count, g[1].acc_sum), (2, 1.5));
    }
}
