//! A Qwen2-VL model directory (Hugging Face layout) -> [`Qwen2VlModel`]: `config.json`,
//! `tokenizer.json`, `model.safetensors`, and optionally the chat template
//! (`chat_template.json` or `tokenizer_config.json`) and `preprocessor_config.json`.

use tokenizers::Tokenizer;

use super::processor::ProcessorOptions;
use super::{prompt, GridThw, Qwen2Vl, Qwen2VlConfig};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
#[cfg(not(target_arch = "wasm32"))]
use crate::model::chat::{CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::model::loader::WEIGHTS_FILE;
#[cfg(not(target_arch = "wasm32"))]
use crate::model::loader::{CONFIG_FILE, TOKENIZER_FILE};
use crate::model::params::SafetensorsParams;
use crate::model::weights::WeightSink;
use crate::package::Manifest;
use crate::quant::hqq::HqqOptions;
use crate::quant::hqq_params::HqqParams;
use crate::quant::spec::QuantSpec;

pub use crate::model::loader::PREPROCESSOR_FILE;

/// Everything needed to turn an image and a question into answer tokens.
pub struct Qwen2VlModel<B: Backend> {
    pub backend: B,
    pub model: Qwen2Vl<B>,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub processor: ProcessorOptions,
    /// Longest answer [`Qwen2VlModel::answer_image`] generates, in tokens.
    pub max_new_tokens: usize,
}

/// Qwen2-VL answers in sentences, not the shapes model's single words.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 32;

impl<B: Backend> std::fmt::Debug for Qwen2VlModel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qwen2VlModel")
            .field("backend", &self.backend.name())
            .field("config", &self.model.cfg)
            .finish()
    }
}

/// The tokenizer must put `<|image_pad|>` at the config's `image_token_id`, or image features
/// would land on the wrong tokens.
fn check_tokenizer(cfg: &Qwen2VlConfig, bytes: &[u8]) -> Result<Tokenizer> {
    let tok = Tokenizer::from_bytes(bytes)
        .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
    match tok.token_to_id(prompt::IMAGE_PAD) {
        Some(id) if id == cfg.image_token_id => {}
        Some(id) => {
            return Err(Error::Tokenizer(format!(
                "tokenizer's {} id {id} differs from config image_token_id {}",
                prompt::IMAGE_PAD,
                cfg.image_token_id
            )))
        }
        None => {
            return Err(Error::Tokenizer(format!(
                "tokenizer has no {} token; is this a Qwen2-VL tokenizer?",
                prompt::IMAGE_PAD
            )))
        }
    }
    if tok.get_vocab_size(true) > cfg.text.vocab_size {
        return Err(Error::Tokenizer(format!(
            "tokenizer has {} tokens but the model's vocab_size is {}",
            tok.get_vocab_size(true),
            cfg.text.vocab_size
        )));
    }
    Ok(tok)
}

/// Whether `name` is one of the language model's decoder linears: what HQQ quantizes at load
/// time, as the study quantizes the language model only (the vision tower, embeddings,
/// `lm_head` and norms stay in float). Either checkpoint layout (`model.layers.N…` or
/// `model.language_model.layers.N…`).
pub fn is_language_linear(name: &str) -> bool {
    !name.starts_with("visual.")
        && !name.starts_with("model.visual.")
        && name.contains(".layers.")
        && (name.contains(".self_attn.") || name.contains(".mlp."))
        && name.ends_with(".weight")
}

/// Everything a Qwen2-VL source holds besides its weights, parsed and checked against each
/// other: the config, the tokenizer (its `<|image_pad|>` at `image_token_id`) and the
/// processor options (their patch sizes the vision config's).
struct Parts {
    cfg: Qwen2VlConfig,
    tokenizer: Tokenizer,
    processor: ProcessorOptions,
}

impl Parts {
    fn new(cfg: Qwen2VlConfig, tokenizer: &[u8], preprocessor: Option<&[u8]>) -> Result<Self> {
        let tokenizer = check_tokenizer(&cfg, tokenizer)?;
        let processor = match preprocessor {
            Some(b) => ProcessorOptions::from_preprocessor_json(
                std::str::from_utf8(b)
                    .map_err(|_| Error::Config("preprocessor_config.json is not UTF-8".into()))?,
            )?,
            None => ProcessorOptions::default(),
        };
        let v = &cfg.vision;
        if (
            processor.patch_size,
            processor.temporal_patch_size,
            processor.merge_size,
        ) != (v.patch_size, v.temporal_patch_size, v.spatial_merge_size)
        {
            return Err(Error::Config(format!(
                "preprocessor_config.json's patch/temporal/merge sizes ({}, {}, {}) differ from the vision config's ({}, {}, {})",
                processor.patch_size,
                processor.temporal_patch_size,
                processor.merge_size,
                v.patch_size,
                v.temporal_patch_size,
                v.spatial_merge_size
            )));
        }
        Ok(Self {
            cfg,
            tokenizer,
            processor,
        })
    }

    fn with_model<B: Backend>(
        self,
        backend: B,
        model: Qwen2Vl<B>,
        template: Option<ChatTemplate>,
    ) -> Qwen2VlModel<B> {
        Qwen2VlModel {
            backend,
            model,
            tokenizer: self.tokenizer,
            template,
            processor: self.processor,
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
        }
    }
}

fn parse_config(config: &[u8]) -> Result<Qwen2VlConfig> {
    let text = std::str::from_utf8(config)
        .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
    Qwen2VlConfig::from_json(text)
}

/// How many linears HQQ quantizes in the language model of `cfg`: q, k, v, o, gate, up and
/// down of every decoder layer. Load-time HQQ and `relvqa quantize` both check their count
/// against it, so a checkpoint whose names the predicate misses cannot pass half-quantized.
pub fn language_linear_count(cfg: &Qwen2VlConfig) -> usize {
    7 * cfg.text.num_hidden_layers
}

/// Build the model from the files' bytes (the optional ones may be absent), with the language
/// model's linears quantized by HQQ to `hqq` as they load (see [`crate::quant::hqq_params`]).
pub fn load_from_bytes_with<B: Backend>(
    backend: B,
    config: &[u8],
    tokenizer: &[u8],
    weights: &[u8],
    template: Option<ChatTemplate>,
    preprocessor: Option<&[u8]>,
    hqq: Option<(QuantSpec, HqqOptions)>,
) -> Result<Qwen2VlModel<B>> {
    let parts = Parts::new(parse_config(config)?, tokenizer, preprocessor)?;
    let cfg = &parts.cfg;
    let params = SafetensorsParams::new(backend.clone(), WEIGHTS_FILE, weights)?;
    let model = match hqq {
        None => {
            let mut params = params;
            Qwen2Vl::load(&mut params, cfg)?
        }
        Some((spec, opts)) => {
            let mut q = HqqParams::new(params, spec, opts, is_language_linear)?;
            let model = Qwen2Vl::load(&mut q, cfg)?;
            let want = language_linear_count(cfg);
            if q.quantized.len() != want {
                return Err(Error::Invalid(format!(
                    "HQQ quantized {} linears, expected the language model's {want}",
                    q.quantized.len()
                )));
            }
            model
        }
    };
    Ok(parts.with_model(backend, model, template))
}

/// A [`WeightSink`] for the Qwen2-VL package `manifest` describes (the streaming entry point,
/// as [`crate::model::loader::package_sink`] is for Idefics3).
pub fn package_sink<B: Backend>(
    backend: B,
    manifest: &Manifest,
) -> Result<WeightSink<B, Qwen2VlConfig>> {
    crate::model::loader::package_sink_for(backend, manifest)
}

/// The model from a sink every tensor of a package went into, with the package's tokenizer,
/// chat template and `preprocessor_config.json` (absent: transformers' defaults).
pub fn load_from_sink<B: Backend>(
    sink: WeightSink<B, Qwen2VlConfig>,
    tokenizer: &[u8],
    template: Option<ChatTemplate>,
    preprocessor: Option<&[u8]>,
) -> Result<Qwen2VlModel<B>> {
    let parts = Parts::new(sink.config().clone(), tokenizer, preprocessor)?;
    let (backend, model) = sink.assemble_model()?;
    Ok(parts.with_model(backend, model, template))
}

/// A Qwen2-VL package directory (`relvqa quantize` of a Qwen2-VL checkpoint): its tensors go
/// to the backend one by one as the shards are read, as Idefics3 packages do.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_package_dir<B: Backend>(backend: B, dir: &std::path::Path) -> Result<Qwen2VlModel<B>> {
    use crate::package::{open_package_dir, read_model_file, stream_package_dir};
    let (manifest, tokenizer) = open_package_dir(dir)?;
    let mut sink = package_sink(backend, &manifest)?;
    // The small files first, so a bad template or processor fails before the shards are read.
    let template = ChatTemplate::from_checkpoint(
        read_model_file(dir, TOKENIZER_CONFIG_FILE)?.as_deref(),
        read_model_file(dir, CHAT_TEMPLATE_FILE)?.as_deref(),
    )?;
    let pre = read_model_file(dir, PREPROCESSOR_FILE)?;
    Parts::new(sink.config().clone(), &tokenizer, pre.as_deref())?;
    stream_package_dir(dir, &manifest, |t| sink.accept(t))?;
    load_from_sink(sink, &tokenizer, template, pre.as_deref())
}

/// A Qwen2-VL model directory or package directory, whichever `path` is. `hqq` quantizes a
/// checkpoint's language model as it loads; a package is quantized already, so asking for
/// both is refused rather than silently ignored.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_path<B: Backend>(
    backend: B,
    path: &std::path::Path,
    hqq: Option<(QuantSpec, HqqOptions)>,
) -> Result<Qwen2VlModel<B>> {
    if !crate::package::is_package_dir(path) {
        return load_dir_with(backend, path, hqq);
    }
    if hqq.is_some() {
        return Err(Error::Invalid(format!(
            "{} is a package, quantized when it was built; load-time HQQ (--hqq-bits) needs \
             the float checkpoint",
            path.display()
        )));
    }
    load_package_dir(backend, path)
}

#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir<B: Backend>(backend: B, dir: &std::path::Path) -> Result<Qwen2VlModel<B>> {
    load_dir_with(backend, dir, None)
}

/// [`load_dir`], optionally with HQQ on the language model (see [`load_from_bytes_with`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_dir_with<B: Backend>(
    backend: B,
    dir: &std::path::Path,
    hqq: Option<(QuantSpec, HqqOptions)>,
) -> Result<Qwen2VlModel<B>> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| Error::Model {
            path: p.display().to_string(),
            msg: format!("cannot read {name}: {e}"),
        })
    };
    let optional = |name: &str| std::fs::read(dir.join(name)).ok();
    let config = read(CONFIG_FILE)?;
    let tokenizer = read(TOKENIZER_FILE)?;
    let weights = read(WEIGHTS_FILE)?;
    let template = ChatTemplate::from_checkpoint(
        optional(TOKENIZER_CONFIG_FILE).as_deref(),
        optional(CHAT_TEMPLATE_FILE).as_deref(),
    )?;
    let pre = optional(PREPROCESSOR_FILE);
    load_from_bytes_with(
        backend,
        &config,
        &tokenizer,
        &weights,
        template,
        pre.as_deref(),
        hqq,
    )
    .map_err(|e| match e {
        Error::WeightsFile { file, msg } => Error::WeightsFile {
            file: dir.join(file).display().to_string(),
            msg,
        },
        other => other,
    })
}

/// Model inputs for one image and a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub ids: Vec<u32>,
    pub pixels: crate::backend::HostTensor,
    pub grids: Vec<GridThw>,
}

impl<B: Backend> Qwen2VlModel<B> {
    /// The processor and the prompt builder: `Qwen2VLProcessor(text, images)` for one image.
    pub fn inputs(&self, img: &image::RgbImage, question: &str) -> Result<Inputs> {
        let processed = super::processor::preprocess(img, &self.processor)?;
        let text = prompt::prompt_text(self.template.as_ref(), question)?;
        let grids = vec![processed.grid];
        let ids = prompt::expand_and_tokenize(
            &self.tokenizer,
            &text,
            &grids,
            self.model.cfg.vision.spatial_merge_size,
        )?;
        if ids.len() >= self.model.cfg.text.max_position_embeddings {
            return Err(Error::Question(format!(
                "the prompt is {} tokens; the model's context is {}",
                ids.len(),
                self.model.cfg.text.max_position_embeddings
            )));
        }
        Ok(Inputs {
            ids,
            pixels: processed.pixels,
            grids,
        })
    }
}
