//! The metrics against an independent Python implementation (`tools/metrics_reference.py`,
//! brute force, stdlib only) on seeded random data, and the bad-input contract.
//!
//! python3 is a hard requirement: a parity test that skips when the reference is missing
//! would pass without checking anything.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relvqa::metrics::{self, phi_report, summarize, PHI_COSTS};
use relvqa::Error;
use serde_json::Value;

const TOL: f64 = 1e-9;

struct Split {
    conf: Vec<f64>,
    acc: Vec<f64>,
}

#[derive(Clone, Copy, Debug)]
enum Conf {
    /// Almost surely distinct values: no ties.
    Continuous,
    /// Rounded to 0.05: many ties, as a MaxProb over short answers gives.
    Tied,
}

#[derive(Clone, Copy, Debug)]
enum Acc {
    Binary,
    /// The values ten-annotator VQA accuracy takes most often.
    Soft,
}

fn random_split(rng: &mut ChaCha8Rng, n: usize, conf: Conf, acc: Acc) -> Split {
    let mut s = Split {
        conf: Vec::with_capacity(n),
        acc: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let c: f64 = rng.random();
        let c = match conf {
            Conf::Continuous => c,
            Conf::Tied => (c * 20.0).round() / 20.0,
        };
        // Correlate accuracy with confidence so the curves are not flat noise.
        let right = rng.random::<f64>() < 0.2 + 0.7 * c;
        let a = match acc {
            Acc::Binary => f64::from(u8::from(right)),
            Acc::Soft => {
                let k: u8 = rng.random_range(0..3);
                if right {
                    [1.0, 1.0, 2.0 / 3.0][usize::from(k)]
                } else {
                    [0.0, 0.0, 1.0 / 3.0][usize::from(k)]
                }
            }
        };
        s.conf.push(c);
        s.acc.push(a);
    }
    s
}

fn write_jsonl(dir: &Path, name: &str, s: &Split) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for (c, a) in s.conf.iter().zip(&s.acc) {
        // Extra fields and renamed columns, as in a real predictions.jsonl.
        writeln!(
            f,
            "{}",
            serde_json::json!({ "question": "q?", "maxprob": c, "acc": a })
        )
        .unwrap();
    }
    path
}

fn python_reference(test: &Path, val: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/metrics_reference.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(test)
        .arg("--val")
        .arg(val)
        .args(["--conf-field", "maxprob", "--acc-field", "acc"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}); the metrics parity test needs Python 3 on PATH \
                 to run {}",
                script.display()
            )
        });
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Same keys, equal strings and nulls, numbers within TOL; `path` names the first difference.
fn assert_close(path: &str, rust: &Value, py: &Value) {
    match (rust, py) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= TOL, "{path}: rust {a} vs python {b}");
        }
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            assert_eq!(ka, kb, "{path}: keys differ");
            for (k, v) in a {
                assert_close(&format!("{path}.{k}"), v, &b[k]);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: lengths differ");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_close(&format!("{path}[{i}]"), x, y);
            }
        }
        _ => assert_eq!(rust, py, "{path}"),
    }
}

fn check_against_python(label: &str, val: &Split, test: &Split) {
    let dir = tempfile::tempdir().unwrap();
    let py = python_reference(
        &write_jsonl(dir.path(), "test.jsonl", test),
        &write_jsonl(dir.path(), "val.jsonl", val),
    );

    let summary = summarize(&test.conf, &test.acc).unwrap();
    let mut rust = serde_json::to_value(&summary).unwrap();
    let note = rust
        .as_object_mut()
        .unwrap()
        .remove("note")
        .unwrap_or(Value::Null);
    assert_close(&format!("{label}: summary"), &rust, &py["summary"]);
    // The reference flags degenerate data; the Rust summary must then carry a note.
    let flagged = !py["degenerate"].as_array().unwrap().is_empty();
    assert_eq!(
        note.is_string(),
        flagged,
        "{label}: note {note} vs flags {}",
        py["degenerate"]
    );

    let phis: BTreeMap<String, metrics::PhiReport> = PHI_COSTS
        .iter()
        .map(|&c| {
            let r = phi_report(&val.conf, &val.acc, &test.conf, &test.acc, c).unwrap();
            (format!("{}", c as u32), r)
        })
        .collect();
    assert_close(
        &format!("{label}: phi"),
        &serde_json::to_value(&phis).unwrap(),
        &py["phi"],
    );
}

#[test]
fn matches_python_reference_on_random_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(20220607);
    for n in [1, 2, 3, 10, 57, 400] {
        for conf in [Conf::Continuous, Conf::Tied] {
            for acc in [Acc::Binary, Acc::Soft] {
                let val = random_split(&mut rng, n + 5, conf, acc);
                let test = random_split(&mut rng, n, conf, acc);
                check_against_python(&format!("n={n} {conf:?} {acc:?}"), &val, &test);
            }
        }
    }
}

#[test]
fn matches_python_reference_on_degenerate_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let val = random_split(&mut rng, 40, Conf::Tied, Acc::Soft);
    let base = random_split(&mut rng, 30, Conf::Tied, Acc::Soft);
    let cases = [
        ("all right", base.conf.clone(), vec![1.0; 30]),
        ("all wrong", base.conf.clone(), vec![0.0; 30]),
        ("one tie group", vec![0.55; 30], base.acc.clone()),
        ("one question", vec![0.3], vec![2.0 / 3.0]),
    ];
    for (label, conf, acc) in cases {
        check_against_python(label, &val, &Split { conf, acc });
    }
}

#[test]
fn python_reference_selftest_passes() {
    // The reference's own check that its tie-aware AUC is reliable_vqa's averaged over tie orders.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/metrics_reference.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--selftest")
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install Python 3"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics_error(r: relvqa::Result<metrics::Summary>) -> String {
    match r {
        Err(Error::Metrics(m)) => m,
        other => panic!("expected Error::Metrics, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let m = metrics_error(summarize(&[0.5, 0.4], &[1.0]));
    assert!(m.contains("2 confidences but 1 accuracies"), "{m}");
    let m = metrics_error(summarize(&[], &[]));
    assert!(m.contains("empty split: no questions to score"), "{m}");
    let m = metrics_error(summarize(&[0.5, 0.4, f64::NAN], &[1.0, 0.0, 1.0]));
    assert!(m.contains("question 2"), "{m}");
    let m = metrics_error(summarize(&[0.5, f64::NEG_INFINITY], &[1.0, 0.0]));
    assert!(m.contains("question 1"), "{m}");
    let m = metrics_error(summarize(&[0.5, 0.4], &[1.0, -0.5]));
    assert!(m.contains("question 1") && m.contains("[0, 1]"), "{m}");
    let m = metrics_error(summarize(&[0.5, 0.4], &[f64::NAN, 0.5]));
    assert!(m.contains("question 0"), "{m}");

    // The same contract on every entry point, not only summarize.
    assert!(matches!(
        metrics::risk_coverage_auc(&[0.5], &[1.0, 1.0]),
        Err(Error::Metrics(_))
    ));
    assert!(matches!(
        metrics::coverage_at_risk(&[], &[], 0.05),
        Err(Error::Metrics(_))
    ));
    assert!(matches!(
        metrics::best_phi_threshold(&[f64::NAN], &[1.0], 10.0),
        Err(Error::Metrics(_))
    ));
    assert!(matches!(
        metrics::phi_report(&[0.5], &[1.0], &[0.5], &[2.0], 1.0),
        Err(Error::Metrics(_))
    ));
    assert!(matches!(
        metrics::expected_calibration_error(&[1.01], &[1.0]),
        Err(Error::Metrics(_))
    ));
    assert!(matches!(
        metrics::best_possible_phi(&[], 1.0),
        Err(Error::Metrics(_))
    ));
}
