//! The `relvqa` binary as a user runs it.

mod common;

use std::process::Command;

fn relvqa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relvqa"))
}

fn write_sample_png(
    dir: &std::path::Path,
    index: u64,
) -> (std::path::PathBuf, relvqa::eval::shapes::Sample) {
    let s = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, index);
    let p = dir.join(format!("sample_{index}.png"));
    s.image.save(&p).unwrap();
    (p, s)
}

#[test]
fn ask_json_has_the_documented_schema() {
    let d = common::tiny_model_dir();
    let (img, s) = write_sample_png(d.path(), 0);
    let out = relvqa()
        .args(["ask", "--json", "--model"])
        .arg(d.path())
        .arg("--image")
        .arg(&img)
        .args(["--question", &s.question.text])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["answer"].is_string());
    let c = v["confidence"].as_f64().unwrap();
    assert!(c > 0.0 && c <= 1.0);
    assert_eq!(v["confidence_source"], "maxprob");
    assert_eq!(v["abstain"], false, "an uncalibrated model never abstains");
    assert!(v["threshold"].is_null());
    for k in ["load", "preprocess", "generate"] {
        assert!(
            v["timings_ms"][k].as_f64().unwrap() >= 0.0,
            "timings_ms.{k}"
        );
    }
}

#[test]
fn bad_inputs_exit_nonzero_with_a_message() {
    let d = common::tiny_model_dir();
    let txt = d.path().join("notes.png");
    std::fs::write(&txt, "this is text").unwrap();
    let out = relvqa()
        .args(["ask", "--model"])
        .arg(d.path())
        .arg("--image")
        .arg(&txt)
        .args(["--question", "is there a red circle ?"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.png") && err.contains("image"), "{err}");

    let (img, _) = write_sample_png(d.path(), 1);
    let out = relvqa()
        .args(["ask", "--model"])
        .arg(d.path())
        .arg("--image")
        .arg(&img)
        .args(["--question", " "])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));

    let out = relvqa()
        .args(["ask", "--model", "/nonexistent/model"])
        .arg("--image")
        .arg(&img)
        .args(["--question", "q"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
}

#[test]
fn eval_json_reports_every_family() {
    let d = common::tiny_model_dir();
    let json = d.path().join("report.json");
    let out = relvqa()
        .args(["eval", "--split", "val", "--limit", "60", "--model"])
        .arg(d.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["n"], 60);
    assert_eq!(v["split"], "val");
    assert_eq!(v["predictions"].as_array().unwrap().len(), 60);
    let fam = v["per_family"].as_object().unwrap();
    let n: u64 = fam.values().map(|f| f["n"].as_u64().unwrap()).sum();
    assert_eq!(n, 60);
}

#[test]
fn calibrate_writes_thresholds_that_ask_uses() {
    let d = common::tiny_model_dir();
    let out = relvqa()
        .args(["calibrate", "--limit", "40", "--model"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("calibration.json")).unwrap()).unwrap();
    assert_eq!(cal["split"], "val");
    assert_eq!(cal["n"], 40);
    let (img, s) = write_sample_png(d.path(), 2);
    let out = relvqa()
        .args(["ask", "--json", "--risk", "0.2", "--model"])
        .arg(d.path())
        .arg("--image")
        .arg(&img)
        .args(["--question", &s.question.text])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["calibrated"], true);
    let conf = v["confidence"].as_f64().unwrap();
    // The decision is the threshold rule applied to the reported numbers.
    match v["threshold"].as_f64() {
        Some(t) => assert_eq!(v["abstain"].as_bool().unwrap(), conf < t),
        None => assert_eq!(v["abstain"], true),
    }
    let out = relvqa()
        .args(["ask", "--risk", "0.07", "--model"])
        .arg(d.path())
        .arg("--image")
        .arg(&img)
        .args(["--question", "q ?"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no threshold calibrated for 7% risk"));
}
