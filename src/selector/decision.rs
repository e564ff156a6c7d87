//! The answer-or-abstain decision for one generated answer, shared by `relvqa ask`, `relvqa
//! demo` and the web page (`src/web.rs`), so the three can only disagree if the model's
//! arithmetic does.
//!
//! The rule: the model's Selector with its own val thresholds when the model ships one, else
//! MaxProb with `calibration.json`'s thresholds, else no threshold (never abstain).

use serde::Serialize;

use super::features::features;
use super::mlp::Selector;
use super::store;
use super::threshold::Calibration;
use crate::error::Result;
use crate::model::generate::Generation;

/// What decides whether to answer: the Selector with its own thresholds when the model ships
/// one, else MaxProb with `calibration.json`'s.
#[derive(Debug, Clone, Default)]
pub struct Confidence {
    pub selector: Option<Selector>,
    pub maxprob_calibration: Option<Calibration>,
}

impl Confidence {
    /// From the bytes of `selector.safetensors` and `calibration.json` (either may be absent),
    /// checking the Selector against the model's hidden size.
    pub fn from_bytes(
        selector: Option<&[u8]>,
        calibration: Option<&[u8]>,
        hidden_size: usize,
    ) -> Result<Self> {
        let selector = selector.map(store::from_bytes).transpose()?;
        if let Some(s) = &selector {
            s.check_model(hidden_size)?;
        }
        Ok(Self {
            selector,
            maxprob_calibration: calibration.map(Calibration::from_json_bytes).transpose()?,
        })
    }
}

/// An answer with its confidence and the abstain decision: the `relvqa ask --json` schema and
/// the object the web page's `ask` returns.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub answer: String,
    pub confidence: f64,
    /// `selector` when the model ships a Selector, else `maxprob`.
    pub confidence_source: &'static str,
    pub abstain: bool,
    /// Threshold for `risk`; null when the model has no calibration or no threshold reaches it.
    pub threshold: Option<f64>,
    pub risk: f64,
    pub calibrated: bool,
    /// One line saying why the answer was given or withheld.
    pub reason: String,
    /// MaxProb beside the Selector, so the two can be compared on one answer.
    pub maxprob: f64,
    pub selector: Option<f64>,
    pub token_probs: Vec<f32>,
    /// Which backend computed the answer: `cpu`, or `webgpu` on the page.
    pub backend: &'static str,
    /// Filled by the caller, which owns the clock (there is no `Instant` on wasm).
    pub timings_ms: serde_json::Value,
}

impl Decision {
    /// One line for people: the answer, or why there is none.
    pub fn describe(&self) -> String {
        if self.abstain {
            format!("abstain (would say `{}`): {}", self.answer, self.reason)
        } else {
            format!(
                "{}  (confidence {:.3}, {})",
                self.answer, self.confidence, self.confidence_source
            )
        }
    }
}

/// Decide on the answer in `g` at target `risk` (0.01, 0.05, 0.1 or 0.2 when calibrated).
pub fn decide(
    g: Generation,
    conf: &Confidence,
    risk: f64,
    backend: &'static str,
) -> Result<Decision> {
    let maxprob = f64::from(g.maxprob());
    let selector = match &conf.selector {
        Some(s) => Some(f64::from(s.confidence(&features(&g)?)?)),
        None => None,
    };
    let (confidence, source, cal) = match (&conf.selector, selector) {
        (Some(s), Some(c)) => (c, "selector", Some(&s.meta.calibration)),
        _ => (maxprob, "maxprob", conf.maxprob_calibration.as_ref()),
    };
    let (threshold, abstain) = match cal {
        Some(c) => (c.threshold(risk)?.threshold, c.abstain(confidence, risk)?),
        None => (None, false),
    };
    let reason = reason(source, confidence, threshold, cal.is_some(), abstain, risk);
    Ok(Decision {
        answer: g.text,
        confidence,
        confidence_source: source,
        abstain,
        threshold,
        risk,
        calibrated: cal.is_some(),
        reason,
        maxprob,
        selector,
        token_probs: g.token_probs,
        backend,
        timings_ms: serde_json::json!({}),
    })
}

fn reason(
    source: &str,
    confidence: f64,
    threshold: Option<f64>,
    calibrated: bool,
    abstain: bool,
    risk: f64,
) -> String {
    let pct = risk * 100.0;
    match (calibrated, threshold) {
        (false, _) => format!(
            "{source} confidence {confidence:.3}; the model has no calibration, so it never abstains"
        ),
        (true, None) => format!(
            "no {source} threshold reaches {pct:.0}% risk on val, so every answer is withheld"
        ),
        (true, Some(t)) if abstain => format!(
            "{source} confidence {confidence:.3} is below {t:.3}, the threshold for {pct:.0}% risk"
        ),
        (true, Some(t)) => format!(
            "{source} confidence {confidence:.3} is at least {t:.3}, the threshold for {pct:.0}% risk"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::generate::AnswerFeatures;
    use crate::selector::threshold::RiskThreshold;

    fn generation(p: f32) -> Generation {
        Generation {
            text: "red".into(),
            tokens: vec![29],
            token_probs: vec![p],
            end_prob: Some(1.0),
            truncated: false,
            token_entropies: vec![0.1],
            features: AnswerFeatures {
                image_pooled: vec![],
                question_pooled: vec![],
                answer_last: vec![],
            },
            prompt_len: 10,
        }
    }

    fn calibration(t5: Option<f64>) -> Calibration {
        let mut thresholds = BTreeMap::new();
        for (k, t) in [(1, None), (5, t5)] {
            thresholds.insert(
                k,
                RiskThreshold {
                    threshold: t,
                    coverage: 0.5,
                    risk: 0.05,
                },
            );
        }
        Calibration {
            confidence_source: "maxprob".into(),
            thresholds,
            ..Default::default()
        }
    }

    fn maxprob_only(t5: Option<f64>) -> Confidence {
        Confidence {
            selector: None,
            maxprob_calibration: Some(calibration(t5)),
        }
    }

    #[test]
    fn below_the_threshold_abstains_with_the_reason() {
        let d = decide(generation(0.25), &maxprob_only(Some(0.5)), 0.05, "cpu").unwrap();
        assert!(d.abstain && d.calibrated);
        assert_eq!((d.confidence, d.threshold), (0.25, Some(0.5)));
        assert_eq!(
            d.reason,
            "maxprob confidence 0.250 is below 0.500, the threshold for 5% risk"
        );
        assert_eq!(d.confidence_source, "maxprob");
        assert_eq!(d.selector, None);
    }

    #[test]
    fn at_the_threshold_answers() {
        let d = decide(generation(0.5), &maxprob_only(Some(0.5)), 0.05, "cpu").unwrap();
        assert!(!d.abstain);
        assert!(d.reason.contains("is at least 0.500"), "{}", d.reason);
    }

    #[test]
    fn no_threshold_withholds_every_answer() {
        let d = decide(generation(1.0), &maxprob_only(Some(0.5)), 0.01, "cpu").unwrap();
        assert!(d.abstain && d.threshold.is_none());
        assert!(d.reason.contains("reaches 1% risk"), "{}", d.reason);
    }

    #[test]
    fn uncalibrated_never_abstains() {
        let d = decide(generation(0.01), &Confidence::default(), 0.05, "cpu").unwrap();
        assert!(!d.abstain && !d.calibrated && d.threshold.is_none());
    }

    #[test]
    fn an_uncalibrated_risk_is_an_error() {
        let e = decide(generation(0.5), &maxprob_only(Some(0.5)), 0.1, "cpu").unwrap_err();
        assert!(
            e.to_string()
                .contains("no threshold calibrated for 10% risk"),
            "{e}"
        );
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(Confidence::from_bytes(Some(b"not safetensors"), None, 8).is_err());
        let e = Confidence::from_bytes(None, Some(b"{"), 8).unwrap_err();
        assert!(e.to_string().contains("calibration.json is invalid"), "{e}");
    }
}
