//! Effective reliability Phi_c (Whitehead et al. 2022): per question, acc if answered
//! and acc > 0, `-c` if answered and acc = 0, 0 if abstained; averaged over all N questions,
//! so abstaining is free while a confidently wrong answer costs `c`.

use serde::{Deserialize, Serialize};

use super::{check_acc, check_inputs, tie_groups};
use crate::error::{Error, Result};

/// Phi values closer than this are one score when choosing a threshold: sums taken in another
/// order differ by ~1e-15·c, and a real difference is at least one question's acc / N.
pub const PHI_TIE_SLACK: f64 = 1e-9;

/// Phi_c with the threshold chosen on val and applied to test, beside test's two bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhiReport {
    pub c: f64,
    /// Chosen on val; `None`: abstaining on everything was best there.
    pub threshold: Option<f64>,
    /// Phi on val at that threshold (optimistic: the threshold was fitted to it).
    pub val_phi: f64,
    /// Phi on test at that threshold: the number to report.
    pub phi: f64,
    /// Test Phi of an oracle answering exactly the questions with acc > 0.
    pub best_possible: f64,
    /// Test Phi when answering everything, the model without the option to abstain.
    pub no_abstention: f64,
}

/// Phi_c answering the questions with confidence `>= threshold`; `None` abstains on all.
pub fn phi(conf: &[f64], acc: &[f64], threshold: Option<f64>, c: f64) -> Result<f64> {
    check_inputs(conf, acc)?;
    check_cost(c)?;
    if threshold.is_some_and(f64::is_nan) {
        return Err(Error::Metrics("Phi threshold is NaN".into()));
    }
    let Some(t) = threshold else {
        return Ok(0.0);
    };
    let total: f64 = conf
        .iter()
        .zip(acc)
        .filter(|(&k, _)| k >= t)
        .map(|(_, &a)| contribution(a, c))
        .sum();
    Ok(total / conf.len() as f64)
}

/// The threshold maximising Phi_c on this data, and that Phi. Candidates are every tie-group
/// boundary plus abstaining on everything (`None`, Phi 0), which reliable_vqa's
/// `computeThresholdAtCost` leaves out: with c = 100 and a poor model, answering even the most
/// confident group can be worse than not answering at all. On equal Phi (within
/// [`PHI_TIE_SLACK`]) the larger coverage wins, as in reliable_vqa ("lowest threshold, i.e.
/// most coverage"): the same score with more questions answered is more useful.
pub fn best_phi_threshold(conf: &[f64], acc: &[f64], c: f64) -> Result<(Option<f64>, f64)> {
    check_inputs(conf, acc)?;
    check_cost(c)?;
    let n = conf.len() as f64;
    // (threshold, Phi) in increasing coverage, starting from abstain-all.
    let mut candidates = vec![(None, 0.0)];
    let mut total = 0.0;
    for g in tie_groups(conf, acc) {
        total += g.positive_acc_sum - c * g.zero_count as f64;
        candidates.push((Some(g.conf), total / n));
    }
    let max = candidates
        .iter()
        .map(|&(_, p)| p)
        .fold(f64::NEG_INFINITY, f64::max);
    let best = candidates
        .iter()
        .rev()
        .find(|&&(_, p)| p >= max - PHI_TIE_SLACK)
        .copied()
        .unwrap_or((None, 0.0));
    Ok(best)
}

/// Upper bound on Phi_c: answer exactly the questions with acc > 0.
pub fn best_possible_phi(acc: &[f64], c: f64) -> Result<f64> {
    check_acc(acc)?;
    check_cost(c)?;
    Ok(acc.iter().filter(|&&a| a > 0.0).sum::<f64>() / acc.len() as f64)
}

/// Phi_c of answering everything; with c = 0 it is the plain VQA accuracy.
pub fn phi_no_abstention(acc: &[f64], c: f64) -> Result<f64> {
    check_acc(acc)?;
    check_cost(c)?;
    Ok(acc.iter().map(|&a| contribution(a, c)).sum::<f64>() / acc.len() as f64)
}

/// Phi_c as the paper reports it: the threshold fitted on val, scored on test, because a
/// threshold fitted on test itself would overstate what a deployed model achieves.
pub fn phi_report(
    val_conf: &[f64],
    val_acc: &[f64],
    test_conf: &[f64],
    test_acc: &[f64],
    c: f64,
) -> Result<PhiReport> {
    let (threshold, val_phi) = best_phi_threshold(val_conf, val_acc, c)?;
    Ok(PhiReport {
        c,
        threshold,
        val_phi,
        phi: phi(test_conf, test_acc, threshold, c)?,
        best_possible: best_possible_phi(test_acc, c)?,
        no_abstention: phi_no_abstention(test_acc, c)?,
    })
}

fn contribution(acc: f64, c: f64) -> f64 {
    if acc > 0.0 {
        acc
    } else {
        -c
    }
}

fn check_cost(c: f64) -> Result<()> {
    if c.is_finite() && c >= 0.0 {
        Ok(())
    } else {
        Err(Error::Metrics(format!(
            "Phi cost c = {c} must be finite and >= 0 (the paper uses 1, 10, 100)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    // Sorted: 0.9 acc 1 | 0.7 acc 0, 0.7 acc 2/3 | 0.2 acc 0.
    const CONF: [f64; 4] = [0.7, 0.2, 0.9, 0.7];
    const ACC: [f64; 4] = [0.0, 0.0, 1.0, 2.0 / 3.0];

    #[test]
    fn phi_at_a_threshold() {
        // c = 10, t = 0.7: answer 1, 0, 2/3 -> (1 - 10 + 2/3) / 4 = -25/12.
        let p = phi(&CONF, &ACC, Some(0.7), 10.0).unwrap();
        assert!((p - (-25.0 / 12.0)).abs() < EPS, "{p}");
        // t = 0.9: 1/4. None: 0.
        assert_eq!(phi(&CONF, &ACC, Some(0.9), 10.0).unwrap(), 0.25);
        assert_eq!(phi(&CONF, &ACC, None, 10.0).unwrap(), 0.0);
    }

    #[test]
    fn best_threshold_walks_tie_groups() {
        // Cumulative sums per boundary, c = 1: 0.9 -> 1; 0.7 -> 1 - 1 + 2/3 = 2/3;
        // 0.2 -> 2/3 - 1 = -1/3. Best is 0.9 with Phi 1/4.
        assert_eq!(
            best_phi_threshold(&CONF, &ACC, 1.0).unwrap(),
            (Some(0.9), 0.25)
        );
        // c = 0: sums 1, 5/3, 5/3: a tie between 0.7 and 0.2 goes to the larger coverage.
        let (t, p) = best_phi_threshold(&CONF, &ACC, 0.0).unwrap();
        assert_eq!(t, Some(0.2));
        assert!((p - 5.0 / 12.0).abs() < EPS);
    }

    #[test]
    fn abstaining_on_everything_is_a_candidate() {
        // The top group alone is wrong: every boundary has Phi < 0, so abstain wins.
        assert_eq!(
            best_phi_threshold(&[0.9, 0.5], &[0.0, 1.0], 100.0).unwrap(),
            (None, 0.0)
        );
        // Equal to abstaining (Phi 0 exactly): the larger coverage wins.
        assert_eq!(
            best_phi_threshold(&[0.9, 0.5], &[0.0, 1.0], 1.0).unwrap(),
            (Some(0.5), 0.0)
        );
    }

    #[test]
    fn oracle_and_no_abstention() {
        // Oracle answers acc > 0: (1 + 2/3) / 4 = 5/12.
        // No abstention, c = 10: (-10 - 10 + 1 + 2/3) / 4 = -55/12.
        assert!((best_possible_phi(&ACC, 10.0).unwrap() - 5.0 / 12.0).abs() < EPS);
        assert!((phi_no_abstention(&ACC, 10.0).unwrap() + 55.0 / 12.0).abs() < EPS);
    }

    #[test]
    fn report_fits_on_val_and_scores_test() {
        // Val picks 0.9 (c = 1, above). Test: conf 0.95 acc 0, 0.9 acc 1, 0.1 acc 1.
        // Answer 0.95 and 0.9: (-1 + 1) / 3 = 0.
        let r = phi_report(&CONF, &ACC, &[0.95, 0.9, 0.1], &[0.0, 1.0, 1.0], 1.0).unwrap();
        assert_eq!(r.threshold, Some(0.9));
        assert_eq!(r.val_phi, 0.25);
        assert_eq!(r.phi, 0.0);
        assert!((r.best_possible - 2.0 / 3.0).abs() < EPS);
        assert!((r.no_abstention - 1.0 / 3.0).abs() < EPS);
    }

    #[test]
    fn bad_cost_and_threshold_are_errors() {
        assert!(phi(&CONF, &ACC, Some(f64::NAN), 1.0).is_err());
        assert!(phi(&CONF, &ACC, Some(0.5), -1.0).is_err());
        assert!(best_possible_phi(&[], 1.0).is_err());
        assert!(phi_no_abstention(&[0.5], f64::INFINITY).is_err());
    }
}
