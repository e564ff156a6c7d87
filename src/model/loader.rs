//! Loading a model directory in the Hugging Face layout: `config.json`, `tokenizer.json`,
//! `model.safetensors`. The byte-level entry point works everywhere (wasm included); the path
//! entry point is native only.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::generate::Vqa;
use crate::model::idefics3::{Idefics3, Idefics3Config};
use crate::model::params::SafetensorsParams;
use crate::model::tokenizer::VqaTokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Build a ready-to-ask model from the three files' bytes.
pub fn load_from_bytes<B: Backend>(
    backend: B,
    config: &[u8],
    tokenizer: &[u8],
    weights: &[u8],
) -> Result<Vqa<B>> {
    let text = std::str::from_utf8(config)
        .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
    let cfg = Idefics3Config::from_json(text)?;
    let tok = check_tokenizer(&cfg, tokenizer)?;
    let mut params = SafetensorsParams::new(backend.clone(), WEIGHTS_FILE, weights)?;
    let model = Idefics3::load(&mut params, &cfg)?;
    Ok(Vqa::new(backend, model, tok))
}

fn check_tokenizer(cfg: &Idefics3Config, tokenizer: &[u8]) -> Result<VqaTokenizer> {
    let tok = VqaTokenizer::from_bytes(tokenizer)?;
    if tok.vocab_size() > cfg.text_config.vocab_size {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} tokens but the model's vocab_size is {}",
            tok.vocab_size(),
            cfg.text_config.vocab_size
        )));
    }
    if tok.special.image != cfg.image_token_id {
        return Err(Error::Tokenizer(format!(
            "tokenizer's <image> id {} differs from config image_token_id {}",
            tok.special.image, cfg.image_token_id
        )));
    }
    Ok(tok)
}

/// Build a model from a package's manifest, tokenizer bytes and decoded tensors (the
/// streaming reader's output, on the web or natively).
pub fn load_from_package<B: Backend>(
    backend: B,
    manifest: &crate::package::Manifest,
    tokenizer: &[u8],
    tensors: Vec<crate::package::LoadedTensor>,
) -> Result<Vqa<B>> {
    load_from_tensors(backend, &manifest.config.to_string(), tokenizer, tensors)
}

/// Build a model from its config JSON, tokenizer bytes and decoded tensors (a package's, or
/// those [`crate::quant::load_time::hqq_tensors`] quantized in memory); every tensor must be used.
pub fn load_from_tensors<B: Backend>(
    backend: B,
    config_json: &str,
    tokenizer: &[u8],
    tensors: Vec<crate::package::LoadedTensor>,
) -> Result<Vqa<B>> {
    let cfg = Idefics3Config::from_json(config_json)?;
    let tok = check_tokenizer(&cfg, tokenizer)?;
    let mut params = crate::package::params::PackageParams::new(backend.clone(), tensors);
    let model = Idefics3::load(&mut params, &cfg)?;
    params.check_all_used()?;
    Ok(Vqa::new(backend, model, tok))
}

/// A model directory or a quantized package directory, whichever `path` is.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_path<B: Backend>(backend: B, path: &std::path::Path) -> Result<Vqa<B>> {
    if crate::package::is_package_dir(path) {
        let (manifest, tokenizer, tensors) = crate::package::read_package_dir(path)?;
        load_from_package(backend, &manifest, &tokenizer, tensors)
    } else {
        load_dir(backend, path)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir<B: Backend>(backend: B, dir: &std::path::Path) -> Result<Vqa<B>> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| Error::Model {
            path: p.display().to_string(),
            msg: format!("cannot read {name}: {e}"),
        })
    };
    let config = read(CONFIG_FILE)?;
    let tokenizer = read(TOKENIZER_FILE)?;
    let weights = read(WEIGHTS_FILE)?;
    load_from_bytes(backend, &config, &tokenizer, &weights).map_err(|e| match e {
        Error::WeightsFile { file, msg } => Error::WeightsFile {
            file: dir.join(file).display().to_string(),
            msg,
        },
        other => other,
    })
}
