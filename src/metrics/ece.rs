//! Expected calibration error: how far the confidence is from the accuracy it predicts.

use super::check_inputs;
use crate::error::{Error, Result};

/// Equal-width bins on [0, 1], the count the paper and most calibration work report.
pub const ECE_BINS: usize = 10;

/// ECE = sum over bins of (bin count / N) · |mean acc − mean conf|, with soft accuracy as the
/// target. Bin `k` holds `k/10 <= conf < (k+1)/10` (index `floor(10·conf)`), except that
/// conf = 1.0 joins the last bin rather than opening an eleventh. Confidences outside [0, 1]
/// are an error: ECE compares them with a probability, so a raw score (a logit) would give a
/// number that means nothing.
pub fn expected_calibration_error(conf: &[f64], acc: &[f64]) -> Result<f64> {
    check_inputs(conf, acc)?;
    if let Some(i) = conf.iter().position(|c| !(0.0..=1.0).contains(c)) {
        return Err(Error::Metrics(format!(
            "confidence of question {i} is {}; ECE needs probabilities in [0, 1]",
            conf[i]
        )));
    }
    let mut count = [0usize; ECE_BINS];
    let mut conf_sum = [0.0f64; ECE_BINS];
    let mut acc_sum = [0.0f64; ECE_BINS];
    for (&c, &a) in conf.iter().zip(acc) {
        let b = ((c * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        count[b] += 1;
        conf_sum[b] += c;
        acc_sum[b] += a;
    }
    let n = conf.len() as f64;
    Ok((0..ECE_BINS)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let k = count[b] as f64;
            k / n * (acc_sum[b] / k - conf_sum[b] / k).abs()
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_bins() {
        // Bin 9: conf 0.95, 1.0 (1.0 joins it), acc 1, 0 -> |1/2 - 0.975| = 0.475, weight 2/4.
        // Bin 2: conf 0.2, 0.25, acc 1, 1 -> |1 - 0.225| = 0.775, weight 2/4.
        // ECE = 0.5 * 0.475 + 0.5 * 0.775 = 0.625.
        let e = expected_calibration_error(&[0.95, 0.2, 1.0, 0.25], &[1.0, 1.0, 0.0, 1.0]).unwrap();
        assert!((e - 0.625).abs() < 1e-12, "{e}");
    }

    #[test]
    fn perfectly_calibrated_bin_scores_zero() {
        // Bin 5: conf 0.5 x4, acc 1, 0, 1, 0 -> |0.5 - 0.5| = 0.
        let e = expected_calibration_error(&[0.5; 4], &[1.0, 0.0, 1.0, 0.0]).unwrap();
        assert_eq!(e, 0.0);
    }

    #[test]
    fn confidence_outside_unit_interval_is_an_error() {
        assert!(expected_calibration_error(&[0.5, 1.5], &[1.0, 0.0]).is_err());
        assert!(expected_calibration_error(&[-0.1], &[1.0]).is_err());
    }
}
