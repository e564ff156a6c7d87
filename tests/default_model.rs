//! The shipped model in `models/default/`: it loads, answers like its model card says, and its
//! calibration file drives the abstain decision.

mod common;

use relvqa::backend::cpu::CpuBackend;
use relvqa::eval::accuracy::evaluate;
use relvqa::eval::shapes::Split;
use relvqa::model::loader::load_dir;

fn train_log() -> serde_json::Value {
    let p = common::default_model_dir().join("train_log.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// `relvqa eval --split test` reproduces the accuracy recorded by the training run (same
/// questions, same weights; a tolerance only for float summation order across machines).
#[test]
fn test_accuracy_matches_the_model_card() {
    let log = train_log();
    let n = log["test"]["n"].as_u64().unwrap() as usize;
    let recorded = log["test"]["accuracy"].as_f64().unwrap();
    let vqa = load_dir(CpuBackend::new(), &common::default_model_dir()).unwrap();
    let r = pollster::block_on(evaluate(&vqa, Split::Test, n, |_| {})).unwrap();
    assert!(
        (r.accuracy - recorded).abs() <= 0.003,
        "accuracy {} vs recorded {recorded}",
        r.accuracy
    );
    // The model reads the image: it beats a guesser that ignores the image and gives each
    // family's most common answer, by a wide margin; and it still errs enough to abstain on.
    let prior = relvqa::eval::accuracy::prior_only_accuracy(Split::Test, n);
    assert!(
        r.accuracy > prior + 0.1,
        "accuracy {} vs image-blind {prior}",
        r.accuracy
    );
    assert!(
        r.accuracy < 0.95,
        "accuracy {}: too few errors to study abstention",
        r.accuracy
    );
    for (family, s) in &r.per_family {
        let rec = log["test"]["per_family"][family]["accuracy"]
            .as_f64()
            .unwrap();
        assert!(
            (s.accuracy - rec).abs() <= 0.01,
            "{family}: {} vs {rec}",
            s.accuracy
        );
    }
}

#[test]
fn shipped_files_are_complete() {
    let d = common::default_model_dir();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "preprocessor_config.json",
        "MODEL_CARD.md",
        "calibration.json",
        "selector.safetensors",
        "train_log.json",
    ] {
        assert!(d.join(f).is_file(), "models/default/{f} is missing");
    }
    let card = std::fs::read_to_string(d.join("MODEL_CARD.md")).unwrap();
    assert!(
        card.contains("transformers"),
        "the model card records the transformers check"
    );
    let st = std::fs::read(d.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert!(
        st.tensors()
            .iter()
            .all(|(_, v)| v.dtype() == safetensors::Dtype::F16),
        "weights ship as f16"
    );
}

#[test]
fn ask_on_a_test_image_reports_a_calibrated_decision() {
    let dir = tempfile::tempdir().unwrap();
    let s = relvqa::eval::shapes::sample(Split::Test, 5);
    let img = dir.path().join("q.png");
    s.image.save(&img).unwrap();
    let v = common::ask_json(None, &img, &s.question.text, &[]);
    assert_eq!(v["calibrated"], true);
    assert_eq!(v["confidence_source"], "selector");
    assert_eq!(v["confidence"], v["selector"]);
    assert!(v["maxprob"].is_number());
    // The decision is the threshold rule applied to the reported numbers.
    let conf = v["confidence"].as_f64().unwrap();
    match v["threshold"].as_f64() {
        Some(t) => assert_eq!(v["abstain"], conf < t),
        None => assert_eq!(v["abstain"], true),
    }
    assert!(v["answer"].as_str().is_some_and(|a| !a.is_empty()));
}

/// A Selector trained on another model reads the wrong features: refused with the fix.
#[test]
fn a_selector_from_another_model_is_refused() {
    let d = common::tiny_model_dir();
    std::fs::copy(
        common::default_model_dir().join("selector.safetensors"),
        d.path().join("selector.safetensors"),
    )
    .unwrap();
    let s = relvqa::eval::shapes::sample(Split::Test, 1);
    let img = d.path().join("q.png");
    s.image.save(&img).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["ask", "--question", &s.question.text])
        .arg("--model")
        .arg(d.path())
        .arg("--image")
        .arg(&img)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hidden size 128") && err.contains("selector train"),
        "{err}"
    );
}
