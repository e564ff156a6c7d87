//! A loaded model of either family, chosen by the checkpoint's `config.json`: what `relvqa
//! ask` and the web page answer with. Both families produce the same [`Generation`] (answer
//! tokens, their probabilities, the Selector's hidden-state features), so everything after the
//! answer — the Selector, the abstain decision, the page's rendering — is written once.
//!
//! This is an enum rather than a trait object because the answer methods are `async` and the
//! families differ in construction (Idefics3's tokenizer wrapper, Qwen2-VL's processor and
//! template), which a match states plainly.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::arch::Architecture;
use crate::model::chat::ChatTemplate;
use crate::model::generate::{Generation, Vqa};
use crate::model::idefics3::Idefics3Config;
use crate::model::qwen2vl::loader::Qwen2VlModel;
use crate::model::qwen2vl::Qwen2VlConfig;
use crate::model::text_gen::{generate_text, CausalLm, TextGeneration};
use crate::model::weights::WeightSink;
use crate::package::{LoadedTensor, Manifest};
use crate::quant::hqq::HqqOptions;
use crate::quant::load_time::hqq_sink;
use crate::quant::spec::QuantSpec;

#[allow(clippy::large_enum_variant)] // one per page or command, moved, never in a collection
pub enum AnyVqa<B: Backend> {
    Idefics3(Vqa<B>),
    Qwen2Vl(Qwen2VlModel<B>),
}

/// A checkpoint directory's files, as bytes (the page fetches them; the CLI reads them).
/// The optional ones may be absent.
#[derive(Debug, Clone, Copy)]
pub struct ModelFiles<'a> {
    pub config: &'a [u8],
    pub tokenizer: &'a [u8],
    pub weights: &'a [u8],
    pub tokenizer_config: Option<&'a [u8]>,
    pub chat_template: Option<&'a [u8]>,
    pub preprocessor: Option<&'a [u8]>,
}

/// The architecture a `config.json`'s bytes describe.
pub fn architecture(config: &[u8]) -> Result<Architecture> {
    let text = std::str::from_utf8(config)
        .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
    Architecture::from_config_json(text)
}

impl<B: Backend> AnyVqa<B> {
    /// Build the model of whichever family `files.config` names, prompts through the
    /// checkpoint's chat template and images through its processor.
    pub fn from_files(backend: B, files: &ModelFiles<'_>) -> Result<Self> {
        let template = ChatTemplate::from_checkpoint(files.tokenizer_config, files.chat_template)?;
        match architecture(files.config)? {
            Architecture::Idefics3 => {
                let mut v = crate::model::loader::load_from_bytes(
                    backend,
                    files.config,
                    files.tokenizer,
                    files.weights,
                )?;
                v.set_processor(files.preprocessor)?;
                let mut m = AnyVqa::Idefics3(v);
                m.set_chat(template.as_ref());
                Ok(m)
            }
            Architecture::Qwen2Vl => Ok(AnyVqa::Qwen2Vl(
                crate::model::qwen2vl::loader::load_from_bytes_with(
                    backend,
                    files.config,
                    files.tokenizer,
                    files.weights,
                    template,
                    files.preprocessor,
                    None,
                )?,
            )),
        }
    }

    /// [`AnyVqa::from_files`] with the language model's linears quantized by HQQ to `spec` as
    /// they load, each uploaded before the next is decoded. `progress(done, total)` follows
    /// the quantized layers (Qwen2-VL's loader reports only the start and the end).
    pub fn from_files_hqq(
        backend: B,
        files: &ModelFiles<'_>,
        spec: QuantSpec,
        opts: &HqqOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let template = ChatTemplate::from_checkpoint(files.tokenizer_config, files.chat_template)?;
        let text = std::str::from_utf8(files.config)
            .map_err(|_| Error::Config("config.json is not UTF-8".into()))?;
        let mut m = match Architecture::from_config_json(text)? {
            Architecture::Idefics3 => {
                let cfg = Idefics3Config::from_json(text)?;
                let sink = hqq_sink(backend, &cfg, files.weights, spec, opts, progress)?;
                let mut v = crate::model::loader::load_from_sink(sink, files.tokenizer)?;
                v.set_processor(files.preprocessor)?;
                AnyVqa::Idefics3(v)
            }
            Architecture::Qwen2Vl => {
                let total = crate::model::qwen2vl::loader::language_linear_count(
                    &Qwen2VlConfig::from_json(text)?,
                );
                progress(0, total);
                let m = crate::model::qwen2vl::loader::load_from_bytes_with(
                    backend,
                    files.config,
                    files.tokenizer,
                    files.weights,
                    None,
                    files.preprocessor,
                    Some((spec, *opts)),
                )?;
                progress(total, total);
                AnyVqa::Qwen2Vl(m)
            }
        };
        m.set_chat(template.as_ref());
        Ok(m)
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            AnyVqa::Idefics3(_) => Architecture::Idefics3,
            AnyVqa::Qwen2Vl(_) => Architecture::Qwen2Vl,
        }
    }

    pub fn backend(&self) -> &B {
        match self {
            AnyVqa::Idefics3(v) => &v.backend,
            AnyVqa::Qwen2Vl(m) => &m.backend,
        }
    }

    /// The language model's hidden size: the Selector's features are three of these.
    pub fn hidden_size(&self) -> usize {
        match self {
            AnyVqa::Idefics3(v) => v.model.cfg.text_config.hidden_size,
            AnyVqa::Qwen2Vl(m) => m.model.cfg.text.hidden_size,
        }
    }

    /// Answer `question` about a decoded image, prepared by the checkpoint's own processor.
    pub async fn answer_image(&self, img: &image::RgbImage, question: &str) -> Result<Generation> {
        match self {
            AnyVqa::Idefics3(v) => v.answer_image(img, question).await,
            AnyVqa::Qwen2Vl(m) => m.answer_image(img, question).await,
        }
    }

    /// A one-token answer about a blank image: on WebGPU this creates every pipeline.
    pub async fn warm_up(&self) -> Result<()> {
        match self {
            AnyVqa::Idefics3(v) => v.warm_up().await,
            AnyVqa::Qwen2Vl(m) => m.warm_up().await,
        }
    }

    /// The checkpoint's chat template for answers. Idefics3 uses it only when it places an
    /// image (a text-only template, as a GGUF conversion has, would drop the image; SmolVLM's
    /// built-in format is used instead); Qwen2-VL's prompt builder handles either.
    pub fn set_chat(&mut self, t: Option<&ChatTemplate>) {
        match self {
            AnyVqa::Idefics3(v) => v.chat = t.filter(|t| t.takes_images()).cloned(),
            AnyVqa::Qwen2Vl(m) => m.template = t.cloned(),
        }
    }

    /// Greedy text from the language model alone (see [`generate_text`]): the prompt is
    /// tokenized here and stops at the family's end-of-turn tokens.
    pub async fn generate(
        &self,
        prompt: &str,
        max_new: usize,
        now: &dyn Fn() -> f64,
    ) -> Result<TextGeneration> {
        match self {
            AnyVqa::Idefics3(v) => text(v, prompt, max_new, now).await,
            AnyVqa::Qwen2Vl(m) => text(m, prompt, max_new, now).await,
        }
    }
}

async fn text<B: Backend, M: CausalLm<B>>(
    lm: &M,
    prompt: &str,
    max_new: usize,
    now: &dyn Fn() -> f64,
) -> Result<TextGeneration> {
    let ids = lm.encode_text(prompt)?;
    generate_text(lm, &ids, max_new, &lm.stop_ids(), now).await
}

/// Where a package's tensors go as they stream in, for the family its manifest names.
#[allow(clippy::large_enum_variant)] // one per load, moved, never in a collection
pub enum AnySink<B: Backend> {
    Idefics3(WeightSink<B, Idefics3Config>),
    Qwen2Vl(WeightSink<B, Qwen2VlConfig>),
}

impl<B: Backend> AnySink<B> {
    pub fn for_manifest(backend: B, manifest: &Manifest) -> Result<Self> {
        Ok(
            match architecture(manifest.config.to_string().as_bytes())? {
                Architecture::Idefics3 => {
                    AnySink::Idefics3(crate::model::loader::package_sink(backend, manifest)?)
                }
                Architecture::Qwen2Vl => AnySink::Qwen2Vl(
                    crate::model::qwen2vl::loader::package_sink(backend, manifest)?,
                ),
            },
        )
    }

    pub fn accept(&mut self, t: LoadedTensor) -> Result<()> {
        match self {
            AnySink::Idefics3(s) => s.accept(t),
            AnySink::Qwen2Vl(s) => s.accept(t),
        }
    }

    /// Whether the model asks for tensor `name`.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            AnySink::Idefics3(s) => s.wants(name),
            AnySink::Qwen2Vl(s) => s.wants(name),
        }
    }

    /// Tensors on the backend so far, and their bytes as the package encoded them.
    pub fn uploaded(&self) -> (usize, u64) {
        match self {
            AnySink::Idefics3(s) => (s.uploaded(), s.uploaded_bytes()),
            AnySink::Qwen2Vl(s) => (s.uploaded(), s.uploaded_bytes()),
        }
    }

    /// The model from the uploaded tensors and the package's small files (checked by the
    /// caller against the manifest).
    pub fn build(
        self,
        tokenizer: &[u8],
        template: Option<&ChatTemplate>,
        preprocessor: Option<&[u8]>,
    ) -> Result<AnyVqa<B>> {
        let mut m = match self {
            AnySink::Idefics3(s) => {
                let mut v = crate::model::loader::load_from_sink(s, tokenizer)?;
                v.set_processor(preprocessor)?;
                AnyVqa::Idefics3(v)
            }
            AnySink::Qwen2Vl(s) => AnyVqa::Qwen2Vl(crate::model::qwen2vl::loader::load_from_sink(
                s,
                tokenizer,
                None,
                preprocessor,
            )?),
        };
        m.set_chat(template);
        Ok(m)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: Backend> AnyVqa<B> {
    /// A model directory or package directory of either family, with its chat template and
    /// image processor. `hqq` quantizes a Qwen2-VL checkpoint's language model as it loads;
    /// an Idefics3 model is quantized into a package instead (`relvqa quantize`).
    pub fn load_path(
        backend: B,
        path: &std::path::Path,
        hqq: Option<(QuantSpec, HqqOptions)>,
    ) -> Result<Self> {
        use crate::model::loader::{architecture_of, PREPROCESSOR_FILE};
        // An unreadable directory falls through to the Idefics3 loader, which says why.
        if let Ok(Architecture::Qwen2Vl) = architecture_of(path) {
            let m = crate::model::qwen2vl::loader::load_path(backend, path, hqq)?;
            return Ok(AnyVqa::Qwen2Vl(m));
        }
        if hqq.is_some() {
            return Err(Error::Invalid(
                "load-time HQQ (--hqq-bits) quantizes Qwen2-VL checkpoints; for an Idefics3 \
                 model, build a package with `relvqa quantize --method hqq` and pass it as --model"
                    .into(),
            ));
        }
        let mut v = crate::model::loader::load_path(backend, path)?;
        v.set_processor(crate::package::read_model_file(path, PREPROCESSOR_FILE)?.as_deref())?;
        let mut m = AnyVqa::Idefics3(v);
        m.set_chat(ChatTemplate::from_model_dir(path)?.as_ref());
        Ok(m)
    }
}
