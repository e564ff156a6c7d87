//! Shared fixtures: a tiny random Idefics3 model directory written by the project's own saver.
#![allow(dead_code)]

pub mod gpu;
pub mod qwen2vl;

use std::path::{Path, PathBuf};

use relvqa::eval::shapes;
use relvqa::model::idefics3::{Idefics3, Idefics3Config};
use relvqa::model::tokenizer::VqaTokenizer;
use relvqa::train::{default_config, params::VarParams, save::save_model_dir};

/// The default architecture shrunk to a few thousand parameters (same code paths: GQA, pixel
/// shuffle, untied head).
pub fn tiny_config(tok: &VqaTokenizer) -> Idefics3Config {
    let mut cfg = default_config(tok);
    cfg.vision_config.hidden_size = 16;
    cfg.vision_config.intermediate_size = 24;
    cfg.vision_config.num_hidden_layers = 1;
    cfg.vision_config.num_attention_heads = 2;
    cfg.text_config.hidden_size = 16;
    cfg.text_config.intermediate_size = 24;
    cfg.text_config.num_hidden_layers = 2;
    cfg.text_config.num_attention_heads = 4;
    cfg.text_config.num_key_value_heads = Some(2);
    cfg.text_config.head_dim = Some(4);
    cfg
}

pub fn tokenizer() -> VqaTokenizer {
    VqaTokenizer::build_word_level(&shapes::vocabulary()).expect("tokenizer")
}

/// Write a random tiny model to `dir` and return its config.
pub fn write_tiny_model(dir: &Path, seed: u64) -> Idefics3Config {
    let tok = tokenizer();
    let cfg = tiny_config(&tok);
    let mut vp = VarParams::new(seed);
    Idefics3::load(&mut vp, &cfg).expect("build tiny model");
    save_model_dir(dir, &cfg, &tok, &vp.vars).expect("save tiny model");
    cfg
}

pub fn tiny_model_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    write_tiny_model(d.path(), 1);
    d
}

pub fn default_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/default")
}

/// Run `relvqa ask --json` on `image` and parse its one JSON object; `model: None` uses the
/// default model from the repository root.
pub fn ask_json(
    model: Option<&Path>,
    image: &Path,
    question: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_relvqa"));
    cmd.args(["ask", "--json"])
        .args(extra)
        .arg("--image")
        .arg(image)
        .args(["--question", question]);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run relvqa");
    assert!(
        out.status.success(),
        "relvqa ask failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ask --json prints one JSON object")
}
