//! wasm only: a Hugging Face checkpoint folder streamed into the tab, as packages are
//! (`src/web_stream.rs`). The worker fetches the small files first, opens a `FolderLoader` on
//! the backend with `config.json`, pushes `model.safetensors` chunk by chunk as `fetch`
//! delivers it (each tensor goes to the backend, HQQ-quantized first when asked, the moment
//! its last byte arrives), then `RelVqa.loadFolder` assembles the model. Fetching the file
//! whole instead held it in wasm memory next to the model built from it: a 435 MiB f16 folder
//! took 1.3 GiB of the tab, and a 2B checkpoint could not load at all inside wasm32's 4 GiB.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::backend::cpu::CpuBackend;
use crate::backend::wgpu::WgpuBackend;
use crate::error::{Error, Result};
use crate::model::chat::ChatTemplate;
use crate::model::streamed_folder::{FolderProgress, StreamedFolder};
use crate::quant::hqq::HqqOptions;
use crate::quant::QuantSpec;
use crate::web::{js_err, Choice, Engine, RelVqa};
use crate::web_stream::Built;

enum Target {
    Cpu(StreamedFolder<CpuBackend>),
    Gpu(StreamedFolder<WgpuBackend>, String),
}

/// A folder's `model.safetensors` being received.
#[wasm_bindgen]
pub struct FolderLoader {
    target: Target,
    fallback: Option<String>,
    /// A GPU error while uploading: the load must restart on the CPU.
    gpu_failed: Option<String>,
}

fn to_js<T: Serialize>(v: &T) -> std::result::Result<JsValue, JsError> {
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    v.serialize(&ser).map_err(|e| JsError::new(&e.to_string()))
}

#[wasm_bindgen]
impl FolderLoader {
    /// For the checkpoint whose `config.json` is `config` (either family), on `backend`
    /// (`auto`/`webgpu` fall back to the CPU, `fallback` says why; `cpu`). With
    /// `quantizeBits` (8, 4, 3 or 2) the language model's linears are quantized with HQQ
    /// (group 64) as they arrive.
    pub async fn open(
        config: Vec<u8>,
        backend: Option<String>,
        quantize_bits: Option<u32>,
    ) -> std::result::Result<FolderLoader, JsError> {
        let hqq = match quantize_bits {
            None => None,
            Some(bits) => Some((
                QuantSpec::new(bits, 64).map_err(js_err)?,
                HqqOptions::default(),
            )),
        };
        let choice = Choice::parse(backend.as_deref()).map_err(js_err)?;
        let cpu = || StreamedFolder::new(CpuBackend::new(), &config, hqq).map(Target::Cpu);
        let (target, fallback) = if choice == Choice::Cpu {
            (cpu().map_err(js_err)?, None)
        } else {
            match WgpuBackend::new().await {
                Ok(b) => {
                    let adapter = b.context().info().adapter.clone();
                    let f = StreamedFolder::new(b, &config, hqq).map_err(js_err)?;
                    (Target::Gpu(f, adapter), None)
                }
                Err(e @ Error::Gpu { .. }) => (cpu().map_err(js_err)?, Some(e.to_string())),
                Err(e) => return Err(js_err(e)),
            }
        };
        Ok(FolderLoader {
            target,
            fallback,
            gpu_failed: None,
        })
    }

    /// Where the tensors go: `webgpu` or `cpu`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        match self.target {
            Target::Cpu(_) => "cpu".into(),
            Target::Gpu(..) => "webgpu".into(),
        }
    }

    /// Why the tensors go to the CPU although WebGPU was asked for.
    #[wasm_bindgen(getter)]
    pub fn fallback(&self) -> Option<String> {
        self.fallback.clone()
    }

    /// Set when a `push` failed because the GPU did: restart the load on the CPU.
    #[wasm_bindgen(getter, js_name = gpuFailed)]
    pub fn gpu_failed(&self) -> Option<String> {
        self.gpu_failed.clone()
    }

    /// Feed the next bytes of `model.safetensors`; returns how many tensors they completed
    /// (each already on the backend).
    pub fn push(&mut self, chunk: &[u8]) -> std::result::Result<usize, JsError> {
        let r = match &mut self.target {
            Target::Cpu(f) => f.push(chunk),
            Target::Gpu(f, _) => f.push(chunk),
        };
        r.map_err(|e| {
            if matches!(e, Error::Gpu { .. }) {
                self.gpu_failed = Some(e.to_string());
            }
            js_err(e)
        })
    }

    /// `{bytesReceived, bytesTotal, tensorsUploaded, quantized, quantizeTotal}`
    /// (`bytesTotal` is 0 until the file's header has arrived).
    pub fn progress(&self) -> std::result::Result<JsValue, JsError> {
        let p: FolderProgress = match &self.target {
            Target::Cpu(f) => f.progress(),
            Target::Gpu(f, _) => f.progress(),
        };
        to_js(&p)
    }
}

impl FolderLoader {
    fn build(
        self,
        tokenizer: &[u8],
        template: Option<&ChatTemplate>,
        preprocessor: Option<&[u8]>,
    ) -> Result<(Built, Option<String>)> {
        let built = match self.target {
            Target::Cpu(f) => Built::Cpu(f.finish(tokenizer, template, preprocessor)?),
            Target::Gpu(f, adapter) => {
                Built::Gpu(f.finish(tokenizer, template, preprocessor)?, adapter)
            }
        };
        Ok((built, self.fallback))
    }
}

#[wasm_bindgen]
impl RelVqa {
    /// From a folder whose `model.safetensors` was pushed whole into `loader`, with the
    /// folder's `tokenizer.json` and, when it has them, `selector.safetensors`,
    /// `calibration.json`, `tokenizer_config.json` / `chat_template.json` (the chat template,
    /// also for `generate`) and `preprocessor_config.json`. The backend is the loader's.
    #[wasm_bindgen(js_name = loadFolder)]
    #[allow(clippy::too_many_arguments)]
    pub async fn load_folder(
        loader: FolderLoader,
        tokenizer: Vec<u8>,
        selector: Option<Vec<u8>>,
        calibration: Option<Vec<u8>>,
        tokenizer_config: Option<Vec<u8>>,
        chat_template: Option<Vec<u8>>,
        preprocessor: Option<Vec<u8>>,
    ) -> std::result::Result<RelVqa, JsError> {
        let t = crate::web::performance_now();
        let chat =
            ChatTemplate::from_checkpoint(tokenizer_config.as_deref(), chat_template.as_deref())
                .map_err(js_err)?;
        let (built, fallback) = loader
            .build(&tokenizer, chat.as_ref(), preprocessor.as_deref())
            .map_err(js_err)?;
        let m = Self::finish(
            Engine::from_built(built),
            fallback,
            selector,
            calibration,
            t,
        )?;
        *m.inner.chat.borrow_mut() = chat;
        Ok(m)
    }
}
