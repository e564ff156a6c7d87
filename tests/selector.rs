//! The Selector: its file format, its refusals, and that training learns what MaxProb misses.

mod common;

use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relvqa::metrics::{coverage_at_risk, risk_coverage_auc};
use relvqa::selector::features::{maxprob_logit, FeatureLayout, MAXPROB_LOGIT};
use relvqa::selector::mlp::Selector;
use relvqa::selector::store::{from_bytes, to_bytes, SELECTOR_FILE};
use relvqa::selector::train::{train_selector, Example, SelectorTrainOptions};

const HIDDEN: usize = 4;

/// Answers whose correctness depends on a hidden "question kind" bit that MaxProb ignores:
/// kind-1 answers are right 90% of the time, kind-0 answers 30%, at the same MaxProb spread.
/// A Selector that reads the features must rank better than MaxProb.
fn synthetic(n: usize, seed: u64) -> Vec<Example> {
    let layout = FeatureLayout::new(HIDDEN);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let kind = rng.random_bool(0.5);
            let maxprob: f32 = rng.random_range(0.3..0.95);
            let p_right = if kind { 0.9 } else { 0.3 };
            let right = rng.random_bool(p_right);
            let mut f: Vec<f32> = (0..layout.input_dim())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            // The kind shows in the pooled question state.
            f[HIDDEN] = if kind { 2.0 } else { -2.0 };
            let probs = 3 * HIDDEN;
            f[probs] = maxprob;
            f[probs + MAXPROB_LOGIT] = maxprob_logit(maxprob);
            Example {
                features: f,
                acc: if right { 1.0 } else { 0.0 },
                maxprob,
            }
        })
        .collect()
}

fn train(dev: &[Example], val: &[Example]) -> Selector {
    let o = SelectorTrainOptions {
        max_epochs: 40,
        patience: 10,
        ..Default::default()
    };
    train_selector(
        FeatureLayout::new(HIDDEN),
        dev,
        val,
        "synthetic",
        &o,
        |_| {},
    )
    .unwrap()
    .0
}

fn conf_acc(s: &Selector, ex: &[Example]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let conf = ex
        .iter()
        .map(|e| s.confidence(&e.features).unwrap() as f64)
        .collect();
    let mp = ex.iter().map(|e| e.maxprob as f64).collect();
    let acc = ex.iter().map(|e| e.acc as f64).collect();
    (conf, mp, acc)
}

#[test]
fn selector_learns_what_maxprob_cannot_see() {
    let (dev, val, test) = (synthetic(1500, 1), synthetic(600, 2), synthetic(1000, 3));
    let s = train(&dev, &val);
    let (conf, mp, acc) = conf_acc(&s, &test);
    let (a_sel, a_mp) = (
        risk_coverage_auc(&conf, &acc).unwrap(),
        risk_coverage_auc(&mp, &acc).unwrap(),
    );
    assert!(
        a_sel < a_mp - 0.05,
        "Selector AUC {a_sel:.4} should beat MaxProb's {a_mp:.4} clearly"
    );
    let c_sel = coverage_at_risk(&conf, &acc, 0.1).unwrap().coverage;
    let c_mp = coverage_at_risk(&mp, &acc, 0.1).unwrap().coverage;
    assert!(c_sel > c_mp, "C@10%: Selector {c_sel} vs MaxProb {c_mp}");
    // Thresholds were chosen on val and are stored with the weights.
    let t = s.meta.calibration.threshold(0.1).unwrap();
    assert!(t.threshold.is_some() && t.risk <= 0.1 + 1e-12);
    assert_eq!(s.meta.calibration.phi.len(), 3);
    assert!(s.meta.best_epoch > 0);
}

#[test]
fn an_untrained_selector_ranks_exactly_like_maxprob() {
    let dev = synthetic(300, 4);
    let o = SelectorTrainOptions {
        max_epochs: 1,
        lr: 0.0,
        ..Default::default()
    };
    let (s, _) = train_selector(
        FeatureLayout::new(HIDDEN),
        &dev,
        &dev,
        "untrained",
        &o,
        |_| {},
    )
    .unwrap();
    for e in &dev {
        let c = s.confidence(&e.features).unwrap();
        assert!(
            (c - e.maxprob).abs() < 1e-4,
            "confidence {c} vs maxprob {}",
            e.maxprob
        );
    }
}

#[test]
fn file_round_trip_keeps_every_confidence() {
    let dev = synthetic(300, 5);
    let s = train(&dev, &synthetic(200, 6));
    let back = from_bytes(&to_bytes(&s).unwrap()).unwrap();
    assert!(back.meta == s.meta, "metadata differs after a round trip");
    assert!(back.mean == s.mean && back.std == s.std && back.skip == s.skip);
    assert!(back.layers == s.layers, "layers differ after a round trip");
    for e in dev.iter().take(20) {
        assert_eq!(
            back.confidence(&e.features).unwrap(),
            s.confidence(&e.features).unwrap()
        );
    }
}

#[test]
fn mismatched_inputs_and_corrupt_files_are_clear_errors() {
    let s = train(&synthetic(200, 7), &synthetic(100, 8));
    let msg = s.confidence(&[0.5; 10]).unwrap_err().to_string();
    assert!(msg.contains("takes 20 features but got 10"), "{msg}");
    let msg = s.check_model(128).unwrap_err().to_string();
    assert!(
        msg.contains("hidden size 4") && msg.contains("selector train"),
        "{msg}"
    );

    let bytes = to_bytes(&s).unwrap();
    for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        let msg = from_bytes(&bytes[..cut]).unwrap_err().to_string();
        assert!(msg.contains(SELECTOR_FILE), "truncated at {cut}: {msg}");
    }
    // A plain safetensors file without the Selector metadata.
    let other = safetensors::serialize(
        [(
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let msg = from_bytes(&other).unwrap_err().to_string();
    assert!(msg.contains("not a relvqa Selector"), "{msg}");
}

#[test]
fn training_refuses_empty_and_non_finite_data() {
    let o = SelectorTrainOptions::default();
    let layout = FeatureLayout::new(HIDDEN);
    let good = synthetic(50, 9);
    let err = train_selector(layout.clone(), &[], &good, "x", &o, |_| {}).unwrap_err();
    assert!(err.to_string().contains("no answers"), "{err}");
    let mut bad = good.clone();
    bad[3].features[0] = f32::NAN;
    let err = train_selector(layout.clone(), &bad, &good, "x", &o, |_| {}).unwrap_err();
    assert!(err.to_string().contains("answer 3"), "{err}");
    let mut short = good.clone();
    short[0].features.pop();
    let err = train_selector(layout, &good, &short, "x", &o, |_| {}).unwrap_err();
    assert!(err.to_string().contains("features"), "{err}");
}

fn relvqa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relvqa"))
}

/// `selector train` on a quantized package lists the Selector in the manifest; `ask` then
/// reports the Selector's confidence and an abstain decision; a tampered file is refused.
#[test]
fn selector_in_a_package_is_used_by_ask_and_checksummed() {
    let d = tempfile::tempdir().unwrap();
    let pkg = d.path().join("pkg");
    let out = relvqa()
        .args(["quantize", "--method", "hqq", "--bits", "4"])
        .arg("--model")
        .arg(common::default_model_dir())
        .arg("--out")
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = relvqa()
        .args([
            "selector",
            "train",
            "--dev",
            "120",
            "--val",
            "60",
            "--max-epochs",
            "5",
        ])
        .arg("--model")
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pkg.join("manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert!(files.contains(&SELECTOR_FILE) && files.contains(&"calibration.json"));

    let s = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, 0);
    let img = d.path().join("q.png");
    s.image.save(&img).unwrap();
    let v = common::ask_json(Some(&pkg), &img, &s.question.text, &["--risk", "0.1"]);
    assert_eq!(v["confidence_source"], "selector");
    assert!(v["abstain"].is_boolean());
    assert_eq!(v["calibrated"], true);
    assert!(v["selector"].as_f64().is_some() && v["maxprob"].as_f64().is_some());
    assert_eq!(v["confidence"], v["selector"]);

    // One flipped byte in the Selector file: refused by its checksum.
    let p = pkg.join(SELECTOR_FILE);
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    std::fs::write(&p, b).unwrap();
    let out = relvqa()
        .args(["ask", "--question", "is there a red circle ?"])
        .arg("--model")
        .arg(&pkg)
        .arg("--image")
        .arg(&img)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sha256") && err.contains(SELECTOR_FILE),
        "{err}"
    );
}
