//! `relvqa eval --variants ... --ood ... --out DIR`: the reliability report end to end, on a
//! copy of the shipped model so its Selector is trained here and nothing in the repo changes.

mod common;

use std::path::Path;
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        // Start without a Selector, so the report has to train one.
        if name != "selector.safetensors" {
            std::fs::copy(e.path(), to.join(name)).unwrap();
        }
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn report_has_every_field_and_can_be_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&common::default_model_dir(), &model);
    let out = tmp.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "eval",
            "--variants",
            "f16,rtn4",
            "--limit",
            "48",
            "--val",
            "40",
        ])
        .args(["--dev", "80", "--ood", "0,50,100"])
        .arg("--model")
        .arg(&model)
        .arg("--work")
        .arg(tmp.path().join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(model.join("selector.safetensors").is_file());

    let r = read_json(&out.join("report.json"));
    assert!(r["easy_vqa"]["questions"].as_u64().unwrap() > 1000);
    assert!(r["easy_vqa"]["unmapped_question_words"].is_object());
    let variants = r["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    for v in variants {
        let name = v["variant"].as_str().unwrap();
        assert!(v["total_bytes"].as_u64().unwrap() > 0, "{name}");
        assert!(
            v["by_kind"]["easy_vqa"]["n"].as_u64().unwrap() > 0,
            "{name}"
        );
        let mixtures = v["mixtures"].as_array().unwrap();
        assert_eq!(mixtures.len(), 3, "{name}");
        for m in mixtures {
            let pct = m["ood_percent"].as_u64().unwrap();
            assert_eq!(m["n_ood"].as_u64().unwrap(), 48 * pct / 100);
            let ests = m["estimators"].as_object().unwrap();
            let expected: &[&str] = if name == "f16" {
                &["maxprob", "selector"]
            } else {
                &["maxprob", "selector", "selector_f16"]
            };
            for e in expected {
                let em = &ests[*e];
                assert!(em["auc"].as_f64().is_some(), "{name} {pct} {e} auc");
                assert!(em["ece"].as_f64().is_some());
                for r in ["1", "5", "10", "20"] {
                    assert!(em["coverage_at_risk"][r]["coverage"].as_f64().is_some());
                }
                for c in ["1", "10", "100"] {
                    for k in ["phi", "best_possible", "no_abstention"] {
                        assert!(em["phi"][c][k].as_f64().is_some(), "{name} {e} phi {c} {k}");
                    }
                }
            }
            // Every line of the predictions file carries what is needed to recompute.
            let file = out.join(m["predictions"].as_str().unwrap());
            let text = std::fs::read_to_string(&file).unwrap();
            assert_eq!(text.lines().count(), 48);
            for line in text.lines() {
                let p: serde_json::Value = serde_json::from_str(line).unwrap();
                for k in [
                    "id",
                    "split",
                    "family",
                    "ood",
                    "question",
                    "answer",
                    "ground_truth",
                ] {
                    assert!(!p[k].is_null(), "{k} missing in {}", file.display());
                }
                assert!(p["acc"].as_f64().is_some() && p["maxprob"].as_f64().is_some());
                assert!(p["selector"].as_f64().is_some());
            }
        }
    }
    for f in [
        "report.md",
        "risk_coverage.svg",
        "risk_coverage.png",
        "bytes.svg",
        "bytes.png",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(out.join("ood_coverage.png").is_file());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| rtn4 |") && md.contains("f16 Selector"));

    // The independent implementation recomputes the report's Selector numbers at 50% OOD.
    let v = &variants[1];
    let m = &v["mixtures"][1];
    let py = Command::new("python3")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("tools/metrics_reference.py")
        .arg("--val")
        .arg(out.join("predictions/rtn4_val.jsonl"))
        .args(["--conf-field", "selector"])
        .arg(out.join(m["predictions"].as_str().unwrap()))
        .output()
        .expect("python3 is needed to recompute the report (apt-get install python3)");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let ours = &m["estimators"]["selector"];
    let theirs: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let close = |a: &serde_json::Value, b: &serde_json::Value| {
        (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-9
    };
    assert!(close(&ours["auc"], &theirs["summary"]["auc"]));
    assert!(close(&ours["ece"], &theirs["summary"]["ece"]));
    assert!(close(
        &ours["coverage_at_risk"]["5"]["coverage"],
        &theirs["summary"]["coverage_at_risk"]["5"]["coverage"]
    ));
    assert!(close(
        &ours["phi"]["10"]["phi"],
        &theirs["phi"]["10"]["phi"]
    ));
}

#[test]
fn report_refuses_bad_ood_shares_and_a_missing_easy_vqa() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_relvqa"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["eval", "--limit", "4", "--out"])
            .arg(tmp.path().join("r"))
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--ood", "0,150"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("0..=100"));
    let o = run(&["--easy-vqa", tmp.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("make easy-vqa"));
}
