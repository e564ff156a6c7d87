//! The committed tiny Qwen2-VL fixture (tests/fixtures/golden/qwen2vl-tiny) and what its tests
//! share: loading it, the prompt's logits on any backend, HQQ specs, `relvqa ask --json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use relvqa::backend::cpu::CpuBackend;
use relvqa::backend::Backend;
use relvqa::model::qwen2vl::loader::{load_dir, Qwen2VlModel};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::spec::QuantSpec;

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/qwen2vl-tiny")
}

pub fn model() -> Qwen2VlModel<CpuBackend> {
    load_dir(CpuBackend::new(), &fixture()).expect("load the qwen2vl fixture")
}

/// The prompt's logits for the fixture's own question and image, on `m`'s backend.
pub fn prompt_logits<B: Backend>(m: &Qwen2VlModel<B>) -> Vec<f32> {
    let img = relvqa::model::image::decode_image(
        &std::fs::read(fixture().join("image.png")).expect("image"),
    )
    .expect("decode");
    let inputs = m.inputs(&img, "what is in the image?").expect("inputs");
    let b = &m.backend;
    let px = b.upload(&inputs.pixels).expect("upload");
    let h = m
        .model
        .forward_prompt(b, &inputs.ids, Some(&px), &inputs.grids, None)
        .expect("forward");
    let l = m.model.logits(b, &h).expect("logits");
    pollster::block_on(b.read_f32(&l)).expect("read").data
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// HQQ at `bits` with group 32 (the fixture's MLP width, 96, is not a multiple of 64).
pub fn hqq(bits: u32) -> Option<(QuantSpec, HqqOptions)> {
    Some((
        QuantSpec::new(bits, 32).expect("spec"),
        HqqOptions::default(),
    ))
}

/// `relvqa ask --json` on the fixture's image with `model` (a checkpoint or a package) and
/// `extra` arguments; checks the answer has the schema of `relvqa ask --json` (no Selector or
/// calibration: MaxProb, never abstaining) and returns it.
pub fn ask_fixture_json(model: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["ask", "--json", "--max-new-tokens", "4", "--model"])
        .arg(model)
        .arg("--image")
        .arg(fixture().join("image.png"))
        .args(["--question", "what is in the image?"])
        .args(extra)
        .output()
        .expect("run relvqa");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert!(v["answer"].as_str().is_some_and(|a| !a.is_empty()), "{v}");
    assert_eq!(v["confidence_source"], "maxprob");
    assert_eq!(v["abstain"], false);
    assert!(v["threshold"].is_null());
    let c = v["confidence"].as_f64().expect("confidence");
    assert!((0.0..=1.0).contains(&c));
    assert!(v["timings_ms"]["generate"].as_f64().is_some());
    v
}
