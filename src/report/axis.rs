//! Chart axes: a linear or log10 `Axis` that plotters maps values through (its `Ranged` trait),
//! with "nice" tick positions and short tick labels.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};

use crate::{Error, Result};

/// A linear or log10 axis with "nice" ticks (1, 2, 2.5, 5 steps; 1-2-5 per decade), which
/// plotters' own log axis does not give for ranges narrower than a decade.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// When set, the ticks: the few x values measured (OOD shares 0, 25, .., 100) each get one.
    pub(super) ticks_at: Vec<f64>,
}

/// The data's distinct values when there are few of them, spread well enough to label each.
pub(super) fn few_distinct(values: impl Iterator<Item = f64>, axis: &Axis) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|x| *x >= axis.lo && *x <= axis.hi).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    let spread = v
        .windows(2)
        .all(|w| w[1] - w[0] >= (axis.hi - axis.lo) / 16.0);
    if !axis.log && (2..=8).contains(&v.len()) && spread {
        v
    } else {
        Vec::new()
    }
}

impl Axis {
    pub(super) fn new(
        title: &str,
        which: &str,
        given: Option<(f64, f64)>,
        data: impl Iterator<Item = f64>,
        log: bool,
    ) -> Result<Self> {
        if let Some((lo, hi)) = given {
            if !(lo < hi && (hi - lo).is_finite()) || (log && lo <= 0.0) {
                return Err(Error::Invalid(format!(
                    "chart `{title}`: {which} range ({lo}, {hi}) must be finite and increasing{}",
                    if log {
                        ", with a positive start for a log axis"
                    } else {
                        ""
                    }
                )));
            }
            return Ok(Axis {
                lo,
                hi,
                log,
                ticks_at: Vec::new(),
            });
        }
        let to = |v: f64| if log { v.log10() } else { v };
        let from = |v: f64| if log { 10f64.powf(v) } else { v };
        let (lo, hi) = data
            .map(to)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        // A margin keeps markers at the extremes off the axis lines; a flat series gets a span.
        let pad = if hi > lo {
            (hi - lo) * 0.04
        } else if log {
            0.15
        } else {
            (lo.abs() * 0.1).max(0.5)
        };
        let (lo, hi) = (from(lo - pad), from(hi + pad));
        if !(lo < hi && (hi - lo).is_finite()) {
            return Err(Error::Invalid(format!(
                "chart `{title}`: {which} values span more than a float can hold; rescale them"
            )));
        }
        Ok(Axis {
            lo,
            hi,
            log,
            ticks_at: Vec::new(),
        })
    }

    fn scaled(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    pub(super) fn ticks(&self, max_n: usize) -> Vec<f64> {
        let max_n = max_n.clamp(2, 12);
        if !self.ticks_at.is_empty() {
            self.ticks_at.clone()
        } else if self.log {
            log_ticks(self.lo, self.hi, max_n)
        } else {
            linear_ticks(self.lo, self.hi, max_n)
        }
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.scaled(self.lo), self.scaled(self.hi));
        let f = (self.scaled(*value) - a) / (b - a);
        // `as` saturates (NaN to 0); plotters clamps to the plotting area afterwards.
        (f64::from(limit.0) + f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        self.ticks(hint.max_num_points())
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(value: &f64) -> String {
        tick_label(*value)
    }
}

fn linear_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    let raw = (hi - lo) / max_n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
    (first..=last).map(|k| k as f64 * step).collect()
}

fn log_ticks(lo: f64, hi: f64, max_n: usize) -> Vec<f64> {
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let mantissas: [&[f64]; 4] = [
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 3.0],
        &[1.0],
    ];
    for set in mantissas {
        let ticks: Vec<f64> = (e0..=e1)
            .flat_map(|e| set.iter().map(move |m| m * 10f64.powi(e)))
            .filter(within)
            .collect();
        if ticks.len() <= max_n {
            // Narrower than the gap between two "nice" values: linear ticks read better.
            return if ticks.len() >= 2 {
                ticks
            } else {
                linear_ticks(lo, hi, max_n)
            };
        }
    }
    let stride = ((e1 - e0) as usize).div_ceil(max_n.max(2) - 1).max(1);
    (e0..=e1)
        .step_by(stride)
        .map(|e| 10f64.powi(e))
        .filter(within)
        .collect()
}

/// Short tick text: SI suffixes for large values (bytes), at most four significant digits.
pub(super) fn tick_label(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    if a >= 1e3 {
        let (div, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|(d, _)| a >= *d)
            .unwrap_or((1e3, "k"));
        return format!("{}{suffix}", trim_zeros(format!("{:.2}", v / div)));
    }
    if a >= 1e-3 {
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        return trim_zeros(format!("{v:.decimals$}"));
    }
    format!("{v:.1e}")
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round() {
        let t = linear_ticks(-0.04, 1.04, 10);
        let labels: Vec<String> = t.iter().map(|v| tick_label(*v)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(linear_ticks(0.0, 0.42, 10).len(), 9); // steps of 0.05
    }

    #[test]
    fn log_ticks_use_1_2_5_and_fall_back_to_linear_within_a_decade() {
        let labels: Vec<String> = log_ticks(7e7, 5e9, 10)
            .iter()
            .map(|v| tick_label(*v))
            .collect();
        assert_eq!(labels, ["100M", "200M", "500M", "1G", "2G", "5G"]);
        let narrow = log_ticks(3.1e7, 3.9e7, 10);
        assert!(narrow.len() >= 2 && narrow.iter().all(|v| (3.1e7..=3.9e7).contains(v)));
        assert!(log_ticks(1e-300, 1e300, 10).len() <= 10);
    }

    #[test]
    fn tick_labels_are_short() {
        for (v, s) in [
            (0.30000000000000004, "0.3"),
            (0.05, "0.05"),
            (75.0, "75"),
            (1.5e8, "150M"),
            (2.5e9, "2.5G"),
            (-1500.0, "-1.5k"),
            (0.0, "0"),
        ] {
            assert_eq!(tick_label(v), s);
        }
    }
}
