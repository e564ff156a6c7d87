//! Loading a model directory in the Hugging Face layout: `config.json`, `tokenizer.json`,
//! `model.safetensors`. The byte-level entry point works everywhere (wasm included); the path
//! entry point is native only.

use std::collections::BTreeSet;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::arch::Architecture;
use crate::model::definition::ModelDefinition;
use crate::model::generate::Vqa;
use crate::model::idefics3::{Idefics3, Idefics3Config};
use crate::model::params::SafetensorsParams;
use crate::model::tokenizer::VqaTokenizer;
use crate::model::weights::WeightSink;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The image processor's settings, in either architecture's checkpoint.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

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

/// A [`WeightSink`] for the Idefics3 package `manifest` describes: tensors pushed into it go
/// to `backend` at once, checked against what the model asks for.
pub fn package_sink<B: Backend>(
    backend: B,
    manifest: &crate::package::Manifest,
) -> Result<WeightSink<B>> {
    package_sink_for(backend, manifest)
}

/// [`package_sink`] for the architecture `M`; a package of another architecture is one
/// [`Error::Config`] naming both (its manifest carries the checkpoint's `config.json`).
pub fn package_sink_for<B: Backend, M: ModelDefinition>(
    backend: B,
    manifest: &crate::package::Manifest,
) -> Result<WeightSink<B, M>> {
    let text = manifest.config.to_string();
    let arch = Architecture::from_config_json(&text)?;
    if arch != M::ARCHITECTURE {
        return Err(Error::Config(format!(
            "the package holds a `{}` model, but this loads `{}` models only{}",
            arch.name(),
            M::ARCHITECTURE.name(),
            if arch == Architecture::Qwen2Vl {
                " (Qwen2-VL packages run with `relvqa ask` and `relvqa check-reference`)"
            } else {
                ""
            }
        )));
    }
    let cfg = M::from_config_json(&text)?;
    let names: BTreeSet<&str> = manifest.tensors.iter().map(|t| t.name.as_str()).collect();
    WeightSink::for_model(backend, &cfg, &|n| names.contains(n))
}

/// The architecture of a model directory or a package directory: `config.json`'s
/// `model_type`, or the one the package's manifest carries.
#[cfg(not(target_arch = "wasm32"))]
pub fn architecture_of(path: &std::path::Path) -> Result<Architecture> {
    if crate::package::is_package_dir(path) {
        let (manifest, _) = crate::package::open_package_dir(path)?;
        return Architecture::from_config_json(&manifest.config.to_string());
    }
    let p = path.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
    Architecture::from_config_json(&text)
}

/// The model from a sink every tensor went into, with the tokenizer's bytes.
pub fn load_from_sink<B: Backend>(sink: WeightSink<B>, tokenizer: &[u8]) -> Result<Vqa<B>> {
    let tok = check_tokenizer(sink.config(), tokenizer)?;
    sink.assemble(tok)
}

/// Build a model from a package's manifest, tokenizer bytes and decoded tensors.
pub fn load_from_package<B: Backend>(
    backend: B,
    manifest: &crate::package::Manifest,
    tokenizer: &[u8],
    tensors: Vec<crate::package::LoadedTensor>,
) -> Result<Vqa<B>> {
    let mut sink = package_sink(backend, manifest)?;
    for t in tensors {
        sink.accept(t)?;
    }
    load_from_sink(sink, tokenizer)
}

/// Build a model from its config JSON, tokenizer bytes and decoded tensors (those
/// [`crate::quant::load_time::hqq_tensors`] quantized in memory); every tensor must be used.
pub fn load_from_tensors<B: Backend>(
    backend: B,
    config_json: &str,
    tokenizer: &[u8],
    tensors: Vec<crate::package::LoadedTensor>,
) -> Result<Vqa<B>> {
    let cfg = Idefics3Config::from_json(config_json)?;
    let names: BTreeSet<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let mut sink = WeightSink::for_model(backend, &cfg, &|n| names.contains(n))?;
    for t in tensors {
        sink.accept(t)?;
    }
    load_from_sink(sink, tokenizer)
}

/// A model directory or a quantized package directory, whichever `path` is. A package's
/// tensors go to the backend one by one as the shards are read, as on the web.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_path<B: Backend>(backend: B, path: &std::path::Path) -> Result<Vqa<B>> {
    if crate::package::is_package_dir(path) {
        let (manifest, tokenizer) = crate::package::open_package_dir(path)?;
        let mut sink = package_sink(backend, &manifest)?;
        crate::package::stream_package_dir(path, &manifest, |t| sink.accept(t))?;
        load_from_sink(sink, &tokenizer)
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
