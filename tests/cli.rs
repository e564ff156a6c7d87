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
    let v = common::ask_json(Some(d.path()), &img, &s.question.text, &[]);
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

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `relvqa ask` expecting failure; returns stderr.
fn ask_fails(model: &std::path::Path, image: &std::path::Path, question: &str) -> String {
    let out = relvqa()
        .args(["ask", "--model"])
        .arg(model)
        .arg("--image")
        .arg(image)
        .args(["--question", question])
        .output()
        .unwrap();
    assert!(!out.status.success(), "expected failure for {question:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_inputs_exit_nonzero_with_a_message() {
    let d = common::tiny_model_dir();
    let txt = d.path().join("notes.png");
    std::fs::write(&txt, "this is text").unwrap();
    let err = ask_fails(d.path(), &txt, "is there a red circle ?");
    assert!(err.contains("notes.png") && err.contains("image"), "{err}");

    let (img, _) = write_sample_png(d.path(), 1);
    assert!(ask_fails(d.path(), &img, " ").contains("empty"));
    assert!(
        ask_fails(std::path::Path::new("/nonexistent/model"), &img, "q").contains("config.json")
    );
}

#[test]
fn eval_json_reports_every_family() {
    let d = common::tiny_model_dir();
    let json = d.path().join("report.json");
    run_ok(
        relvqa()
            .args(["eval", "--split", "val", "--limit", "60", "--model"])
            .arg(d.path())
            .arg("--json")
            .arg(&json),
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
    run_ok(
        relvqa()
            .args(["calibrate", "--limit", "40", "--model"])
            .arg(d.path()),
    );
    let cal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("calibration.json")).unwrap()).unwrap();
    assert_eq!(cal["split"], "val");
    assert_eq!(cal["n"], 40);
    let (img, s) = write_sample_png(d.path(), 2);
    let v = common::ask_json(Some(d.path()), &img, &s.question.text, &["--risk", "0.2"]);
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

/// `relvqa web-models`: each package with the files a browser fetches (Selector and
/// calibration listed in its manifest), f16 as a package too, and `index.json` with bytes,
/// f16 first.
#[test]
fn web_models_writes_packages_and_an_index_with_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("models");
    run_ok(
        relvqa()
            .args([
                "web-models",
                "--variants",
                "hqq4",
                "--dev",
                "40",
                "--val",
                "40",
            ])
            .arg("--model")
            .arg(common::default_model_dir())
            .arg("--work")
            .arg(tmp.path().join("work"))
            .arg("--out")
            .arg(&out),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let vs = index["variants"].as_array().unwrap();
    let names: Vec<&str> = vs.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["f16", "hqq4"]);
    assert_eq!(vs[0]["kind"], "package");
    assert_eq!(vs[1]["kind"], "package");
    let m = relvqa::package::Manifest::from_json(
        &std::fs::read(out.join("hqq4").join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vs[1]["bytes"].as_u64().unwrap(), m.total_bytes());
    assert!(vs[1]["bytes"].as_u64() < vs[0]["bytes"].as_u64());
    for f in ["selector.safetensors", "calibration.json"] {
        assert!(m.file(f).is_some(), "{f} listed in the manifest");
        assert!(out.join("hqq4").join(f).is_file(), "{f} copied");
    }
    let (img, s) = write_sample_png(tmp.path(), 0);
    let v = common::ask_json(Some(&out.join("hqq4")), &img, &s.question.text, &[]);
    assert_eq!(v["confidence_source"], "selector");
    // The f16 package (what the page streams) answers exactly like the model directory.
    let f16 = common::ask_json(Some(&out.join("f16")), &img, &s.question.text, &[]);
    let dir = common::ask_json(
        Some(&common::default_model_dir()),
        &img,
        &s.question.text,
        &[],
    );
    for k in [
        "answer",
        "confidence",
        "confidence_source",
        "abstain",
        "maxprob",
    ] {
        assert_eq!(f16[k], dir[k], "{k}");
    }
    assert!(vs[0]["download_bytes"].as_u64() > vs[0]["bytes"].as_u64());
}
