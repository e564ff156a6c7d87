//! Risk–coverage: answer when confidence `>= threshold`; coverage = answered / N; risk = mean
//! of (1 - acc) over the answered questions. Questions with equal confidence are answered or
//! abstained together, because no threshold can separate them.

use serde::{Deserialize, Serialize};

use super::{check_inputs, tie_groups, RISK_SLACK};
use crate::error::{Error, Result};

/// One operating point: the state after answering every question with confidence `>= threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f64,
    pub coverage: f64,
    pub risk: f64,
}

/// The largest coverage reachable within a target risk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoverageAtRisk {
    /// Answer when confidence `>=` this; `None`: even the most confident tie group is too risky,
    /// so the only choice within the target is to abstain on everything.
    pub threshold: Option<f64>,
    pub coverage: f64,
    /// Risk at that threshold; 0 when nothing is answered (an empty answered set has no errors).
    pub risk: f64,
}

/// The risk–coverage curve, most confident first: one point per distinct confidence, taken
/// after its whole tie group is answered (a point inside a group is not reachable).
pub fn risk_coverage_curve(conf: &[f64], acc: &[f64]) -> Result<Vec<CurvePoint>> {
    check_inputs(conf, acc)?;
    let n = conf.len() as f64;
    let (mut answered, mut errors) = (0usize, 0.0f64);
    Ok(tie_groups(conf, acc)
        .into_iter()
        .map(|g| {
            answered += g.count;
            errors += g.count as f64 - g.acc_sum;
            CurvePoint {
                threshold: g.conf,
                coverage: answered as f64 / n,
                risk: errors / answered as f64,
            }
        })
        .collect())
}

/// Area under the risk–coverage curve, as a fraction in [0, 1]; lower is better.
///
/// reliable_vqa (`eval_scripts/reliable_vqa_eval.py`, `setRiskCoverage`; the same in
/// `modules/metrics.py`, `_get_risk_coverage`) sorts by confidence descending, makes one point
/// per question — coverage `i/N`, risk = mean error of the first `i` — and integrates those N
/// points with `sklearn.metrics.auc`, the trapezoid rule. The integral therefore starts at
/// coverage `1/N`, not 0, and it reports the area ×100.
///
/// We integrate the same N points on the same grid `1/N, 2/N, ..., 1` with the same trapezoid,
/// so without ties the value equals reliable_vqa's (÷100). The difference is ties: there,
/// Python's stable sort keeps the input order of tied questions, so reliable_vqa's AUC changes
/// when a predictions file is shuffled, though no threshold can tell those questions apart.
/// Here the risk at a point inside a tie group is its expectation over every order of the
/// group: after `a` questions with error sum `E`, answering `j` of a group with mean error
/// `ē` gives `(E + j·ē) / (a + j)` (the denominator is fixed, so the mean passes through).
/// Because the trapezoid is linear in the risks, the result is exactly the mean of
/// reliable_vqa's AUC over all orders of the tied questions. At group boundaries the integrand
/// passes through the [`risk_coverage_curve`] points.
///
/// Integrating only the group points was rejected: a split with one tie group (a constant
/// confidence) would have a one-point curve, area 0, and a perfect-looking score. Here it gets
/// `risk · (1 - 1/N)`, what reliable_vqa gives on average. One question gives 0 (no width).
pub fn risk_coverage_auc(conf: &[f64], acc: &[f64]) -> Result<f64> {
    check_inputs(conf, acc)?;
    let n = conf.len() as f64;
    let (mut answered, mut errors) = (0usize, 0.0f64);
    let mut prev_risk: Option<f64> = None;
    let mut area = 0.0;
    for g in tie_groups(conf, acc) {
        let group_errors = g.count as f64 - g.acc_sum;
        for j in 1..=g.count {
            let expected_errors = errors + j as f64 * group_errors / g.count as f64;
            let risk = expected_errors / (answered + j) as f64;
            if let Some(p) = prev_risk {
                area += (p + risk) / 2.0 / n;
            }
            prev_risk = Some(risk);
        }
        answered += g.count;
        errors += group_errors;
    }
    Ok(area)
}

/// C@R: the largest coverage over tie-group boundaries whose risk is `<= target` (a fraction,
/// 0.05 for 5%), within [`RISK_SLACK`]. Like reliable_vqa's `computeCatR`, a boundary inside a
/// tie is never chosen; unlike it we scan every boundary rather than walking back from the end,
/// which gives the same answer and is simpler to check.
pub fn coverage_at_risk(conf: &[f64], acc: &[f64], target: f64) -> Result<CoverageAtRisk> {
    check_inputs(conf, acc)?;
    if !(target.is_finite() && target >= 0.0) {
        return Err(Error::Metrics(format!(
            "target risk {target} must be a finite fraction >= 0 (0.05 for 5%)"
        )));
    }
    let mut best = CoverageAtRisk {
        threshold: None,
        coverage: 0.0,
        risk: 0.0,
    };
    for p in risk_coverage_curve(conf, acc)? {
        if p.risk <= target + RISK_SLACK {
            best = CoverageAtRisk {
                threshold: Some(p.threshold),
                coverage: p.coverage,
                risk: p.risk,
            };
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    #[test]
    fn curve_has_one_point_per_tie_group() {
        // Sorted: 0.9 (acc 1) | 0.6 (acc 0), 0.6 (acc 1) | 0.2 (acc 1/3).
        // After 0.9: cov 1/4, risk 0. After 0.6: cov 3/4, errors 1, risk 1/3.
        // After 0.2: cov 1, errors 1 + 2/3, risk 5/12.
        let c = risk_coverage_curve(&[0.6, 0.9, 0.2, 0.6], &[0.0, 1.0, 1.0 / 3.0, 1.0]).unwrap();
        let want = [
            (0.9, 0.25, 0.0),
            (0.6, 0.75, 1.0 / 3.0),
            (0.2, 1.0, 5.0 / 12.0),
        ];
        assert_eq!(c.len(), 3);
        for (p, (t, cov, r)) in c.iter().zip(want) {
            assert_eq!(p.threshold, t);
            assert!(
                (p.coverage - cov).abs() < EPS && (p.risk - r).abs() < EPS,
                "{p:?}"
            );
        }
    }

    #[test]
    fn auc_without_ties_is_reliable_vqas_trapezoid() {
        // Sorted errors 0, 1, 0, 1 -> risks 0, 1/2, 1/3, 1/2 at coverages 1/4 .. 1.
        // Trapezoid: (0 + 1/2)/2/4 + (1/2 + 1/3)/2/4 + (1/3 + 1/2)/2/4
        //          = (1/2 + 5/6 + 5/6) / 8 = (13/6) / 8 = 13/48.
        let auc = risk_coverage_auc(&[0.9, 0.8, 0.7, 0.6], &[1.0, 0.0, 1.0, 0.0]).unwrap();
        assert!((auc - 13.0 / 48.0).abs() < EPS, "{auc}");
    }

    /// reliable_vqa's AUC for one fixed order: trapezoid over per-question points.
    fn ordered_auc(errs: &[f64]) -> f64 {
        let n = errs.len() as f64;
        let mut risks = Vec::new();
        let mut sum = 0.0;
        for (i, e) in errs.iter().enumerate() {
            sum += e;
            risks.push(sum / (i + 1) as f64);
        }
        risks.windows(2).map(|w| (w[0] + w[1]) / 2.0 / n).sum()
    }

    #[test]
    fn auc_with_ties_is_the_mean_over_tie_orders() {
        // Groups: {0.9: acc 1}, {0.5: acc 0, 1, 2/3}, {0.1: acc 0}. Average reliable_vqa's AUC
        // over the 3! orders of the middle group and compare.
        let conf = [0.5, 0.9, 0.5, 0.1, 0.5];
        let acc = [0.0, 1.0, 1.0, 0.0, 2.0 / 3.0];
        let mid = [1.0, 0.0, 1.0 / 3.0]; // errors of the tied group
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mean: f64 = perms
            .iter()
            .map(|p| ordered_auc(&[0.0, mid[p[0]], mid[p[1]], mid[p[2]], 1.0]))
            .sum::<f64>()
            / 6.0;
        let auc = risk_coverage_auc(&conf, &acc).unwrap();
        assert!((auc - mean).abs() < EPS, "{auc} vs {mean}");
        // And shuffling the input cannot change it.
        let auc2 = risk_coverage_auc(&[0.5, 0.5, 0.1, 0.9, 0.5], &[1.0, 2.0 / 3.0, 0.0, 1.0, 0.0])
            .unwrap();
        assert!((auc - auc2).abs() < EPS);
    }

    #[test]
    fn one_tie_group_integrates_its_risk() {
        // Constant confidence, mean error 1/4: risk 1/4 at every point from 1/4 to 1,
        // area 1/4 * (1 - 1/4) = 3/16.
        let auc = risk_coverage_auc(&[0.3; 4], &[1.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((auc - 3.0 / 16.0).abs() < EPS, "{auc}");
        assert_eq!(risk_coverage_auc(&[0.3], &[0.0]).unwrap(), 0.0);
    }

    #[test]
    fn coverage_at_risk_never_splits_ties() {
        // Sorted: 0.9 ok | 0.8 ok, 0.8 wrong | 0.1 ok. Boundary risks: 0, 1/3, 1/4.
        let conf = [0.8, 0.9, 0.8, 0.1];
        let acc = [1.0, 1.0, 0.0, 1.0];
        // 0% and 20%: only the first group (answering one of the 0.8 pair is not allowed).
        for r in [0.0, 0.2] {
            let c = coverage_at_risk(&conf, &acc, r).unwrap();
            assert_eq!((c.threshold, c.coverage, c.risk), (Some(0.9), 0.25, 0.0));
        }
        // 25%: everything, risk exactly 1/4.
        let c = coverage_at_risk(&conf, &acc, 0.25).unwrap();
        assert_eq!((c.threshold, c.coverage, c.risk), (Some(0.1), 1.0, 0.25));
        // Top group wrong: nothing within 0%.
        let c = coverage_at_risk(&[0.9, 0.1], &[0.0, 1.0], 0.0).unwrap();
        assert_eq!((c.threshold, c.coverage, c.risk), (None, 0.0, 0.0));
    }

    #[test]
    fn soft_accuracy_at_exactly_the_target_counts() {
        // Errors 1/3 + 1/3 + 1/3 + 0 + 0 over 5 = 1/5 in reals; in floating point the sum of
        // 1 - 2/3 three times may land one ulp above, which RISK_SLACK absorbs.
        let acc = [2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0, 1.0];
        let c = coverage_at_risk(&[0.5; 5], &acc, 0.2).unwrap();
        assert_eq!(c.coverage, 1.0);
    }

    #[test]
    fn bad_target_is_an_error() {
        assert!(coverage_at_risk(&[0.5], &[1.0], f64::NAN).is_err());
        assert!(coverage_at_risk(&[0.5], &[1.0], -0.1).is_err());
    }
}
