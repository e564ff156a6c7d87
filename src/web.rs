//! The WebAssembly API the web page's worker calls (`www/worker.js`): build a model from a
//! package streamed into a [`PackageLoader`] (each tensor already on the backend) or from a
//! model directory's files fetched by JavaScript, on WebGPU when the browser has it and on the
//! CPU otherwise, then answer questions with the same decision rule as `relvqa ask`
//! ([`crate::selector::decision::decide`]).
//!
//! Falling back: a WebGPU backend that cannot be opened or loaded (no `navigator.gpu`, no
//! adapter, a limit) gives way to the CPU backend at load. No host copy of the weights is
//! kept for a device lost or out of memory later (that would double the tab's memory): the
//! answer fails, `gpuLost` says why, and the worker loads the model again on the CPU — a
//! package from the Cache API, which holds every shard after the first load — and asks the
//! same question again. Either way the answer says which backend ran and why.
//!
//! Errors cross the boundary as JS `Error`s carrying the crate's typed message.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::backend::cpu::CpuBackend;
use crate::backend::wgpu::WgpuBackend;
use crate::error::{Error, GpuErrorKind, Result};
use crate::model::any_vqa::{AnyVqa, ModelFiles};
use crate::model::chat::{ChatTemplate, CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::model::generate::Generation;
use crate::model::image::decode_image;
use crate::model::loader::PREPROCESSOR_FILE;
use crate::selector::decision::{decide, Confidence, Decision};
use crate::selector::store::SELECTOR_FILE;
use crate::selector::threshold::CALIBRATION_FILE;
use crate::web_stream::{Built, PackageLoader};

#[wasm_bindgen]
extern "C" {
    // `performance` exists in windows and workers alike; `Instant` does not exist on wasm.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    pub(crate) fn performance_now() -> f64;
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

pub(crate) fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Bytes of this module's linear memory (`memory.buffer.byteLength`): what the tab holds in
/// wasm, weights included on the CPU backend. It only grows (wasm memory never shrinks), so
/// after a load it is the load's peak.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| m.buffer().dyn_into::<js_sys::ArrayBuffer>().ok())
        .map_or(0.0, |b| f64::from(b.byte_length()))
}

/// The packed int-N CPU kernels this module runs (simd128 when compiled with it) against their
/// scalar reference, in this browser: `[{bits, group, isa, cases, rel_err, ok}]`. The simd128
/// path exists only in the wasm build, so this is where it is tested.
#[wasm_bindgen(js_name = cpuKernelSelfTest)]
pub fn cpu_kernel_self_test() -> std::result::Result<JsValue, JsError> {
    let checks = crate::quant::kernels::self_test::simd_against_scalar(11).map_err(js_err)?;
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    checks
        .serialize(&ser)
        .map_err(|e| JsError::new(&e.to_string()))
}

/// What [`gpu_self_test`] reports.
#[derive(Debug, Serialize)]
struct SelfTest {
    adapter: String,
    subgroups: bool,
    checks: Vec<crate::backend::parity::ParityCheck>,
    failed: usize,
}

/// Run every op of the WebGPU backend against the CPU backend in this browser (the checks
/// `tests/gpu_backend.rs` runs natively): `{adapter, subgroups, checks: [{name, rel_err, tol}],
/// failed}`. Rejects when there is no WebGPU adapter.
#[wasm_bindgen(js_name = gpuSelfTest)]
pub async fn gpu_self_test() -> std::result::Result<JsValue, JsError> {
    let b = WgpuBackend::new().await.map_err(js_err)?;
    let checks = crate::backend::parity::op_parity(&b)
        .await
        .map_err(js_err)?;
    let report = SelfTest {
        adapter: b.context().info().adapter.clone(),
        subgroups: b.context().uses_subgroups(),
        failed: checks.iter().filter(|c| !c.ok()).count(),
        checks,
    };
    b.context().destroy();
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    report
        .serialize(&ser)
        .map_err(|e| JsError::new(&e.to_string()))
}

/// The backend the page asks for: `auto` (the default) and `webgpu` both try WebGPU and fall
/// back to the CPU; `cpu` never touches the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    Auto,
    WebGpu,
    Cpu,
}

impl Choice {
    pub(crate) fn parse(s: Option<&str>) -> Result<Self> {
        match s.unwrap_or("auto") {
            "auto" | "" => Ok(Choice::Auto),
            "webgpu" => Ok(Choice::WebGpu),
            "cpu" => Ok(Choice::Cpu),
            other => Err(Error::Invalid(format!(
                "backend `{other}` is not one of auto, webgpu, cpu"
            ))),
        }
    }
}

/// The model on the backend that answers, of either family ([`AnyVqa`]).
// One engine per page, behind an `Rc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Engine {
    Cpu(AnyVqa<CpuBackend>),
    Gpu(GpuModel),
}

pub(crate) struct GpuModel {
    pub(crate) vqa: AnyVqa<WgpuBackend>,
    adapter: String,
}

/// Run `$body` with `$v` bound to the engine's model, whichever backend it is on.
macro_rules! on_engine {
    ($engine:expr, $v:ident => $body:expr) => {
        match $engine {
            Engine::Cpu($v) => $body,
            Engine::Gpu(g) => {
                let $v = &g.vqa;
                $body
            }
        }
    };
}
pub(crate) use on_engine;

impl Engine {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu",
            Engine::Gpu(_) => "webgpu",
        }
    }

    pub(crate) fn adapter(&self) -> Option<&str> {
        match self {
            Engine::Cpu(_) => None,
            Engine::Gpu(g) => Some(&g.adapter),
        }
    }

    fn hidden_size(&self) -> usize {
        on_engine!(self, v => v.hidden_size())
    }

    /// The CPU backend's readback futures are ready at once; awaiting them costs nothing.
    async fn answer(&self, img: &image::RgbImage, question: &str) -> Result<Generation> {
        on_engine!(self, v => v.answer_image(img, question).await)
    }

    /// Prompt answers through the checkpoint's chat template (see [`AnyVqa::set_chat`]).
    pub(crate) fn set_chat(&mut self, t: Option<&ChatTemplate>) {
        match self {
            Engine::Cpu(v) => v.set_chat(t),
            Engine::Gpu(g) => g.vqa.set_chat(t),
        }
    }

    pub(crate) fn from_built(built: Built) -> Engine {
        match built {
            Built::Cpu(v) => Engine::Cpu(v),
            Built::Gpu(vqa, adapter) => Engine::Gpu(GpuModel { vqa, adapter }),
        }
    }

    /// Build on `choice`'s backend with `build`, falling back to the CPU on any GPU error
    /// while opening the device or uploading (no adapter, a limit, a lost device). The
    /// source's bytes live only for this call.
    async fn open(
        choice: Choice,
        build_cpu: impl Fn(CpuBackend) -> Result<AnyVqa<CpuBackend>>,
        build_gpu: impl Fn(WgpuBackend) -> Result<AnyVqa<WgpuBackend>>,
    ) -> Result<(Engine, Option<String>)> {
        if choice == Choice::Cpu {
            return Ok((Engine::Cpu(build_cpu(CpuBackend::new())?), None));
        }
        let gpu = async {
            let b = WgpuBackend::new().await?;
            let adapter = b.context().info().adapter.clone();
            Ok::<_, Error>(GpuModel {
                vqa: build_gpu(b)?,
                adapter,
            })
        };
        match gpu.await {
            Ok(g) => Ok((Engine::Gpu(g), None)),
            Err(e @ Error::Gpu { .. }) => Ok((
                Engine::Cpu(build_cpu(CpuBackend::new())?),
                Some(e.to_string()),
            )),
            Err(e) => Err(e),
        }
    }

    /// The `compile` stage: on WebGPU, a one-token answer creates every pipeline now, during
    /// the load, rather than in the user's first question. The CPU has nothing to compile.
    async fn warm_up(&self) -> Result<()> {
        match self {
            Engine::Gpu(g) => g.vqa.warm_up().await,
            Engine::Cpu(_) => Ok(()),
        }
    }
}

/// Failures of an answer on WebGPU that the CPU backend does not share.
pub(crate) fn gpu_gave_out(e: &Error) -> bool {
    matches!(
        e,
        Error::Gpu {
            kind: GpuErrorKind::DeviceLost
                | GpuErrorKind::OutOfMemory
                | GpuErrorKind::LimitExceeded,
            ..
        }
    )
}

/// The engine in use and why it is the CPU when WebGPU was asked for. Replaced, never
/// borrowed across an `await`, so a fallback in one answer cannot clash with another.
pub(crate) struct State {
    pub(crate) engine: Rc<Engine>,
    pub(crate) fallback: Option<String>,
    /// Why WebGPU gave out during an answer or the warm-up; the model must be loaded again
    /// on the CPU (the worker does it).
    pub(crate) gpu_lost: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) state: RefCell<State>,
    conf: Confidence,
    /// The checkpoint's chat template, for `generate` (src/web_text.rs); `None` without one.
    pub(crate) chat: RefCell<Option<ChatTemplate>>,
}

/// What `ask` returns: the `relvqa ask --json` object plus where it ran.
#[derive(Serialize)]
struct WebAnswer {
    #[serde(flatten)]
    decision: Decision,
    /// The WebGPU adapter's name; null on the CPU.
    adapter: Option<String>,
    /// Why the answer came from the CPU although WebGPU was asked for; null otherwise.
    fallback: Option<String>,
}

impl Inner {
    pub(crate) fn engine(&self) -> Rc<Engine> {
        self.state.borrow().engine.clone()
    }

    async fn ask(&self, image: &[u8], question: &str, risk: f64) -> Result<WebAnswer> {
        let t0 = performance_now();
        let engine = self.engine();
        let img = decode_image(image)?;
        let t1 = performance_now();
        let g = match engine.answer(&img, question).await {
            Err(e) if gpu_gave_out(&e) && matches!(*engine, Engine::Gpu(_)) => {
                self.state.borrow_mut().gpu_lost = Some(e.to_string());
                return Err(e);
            }
            r => r?,
        };
        let t2 = performance_now();
        let mut decision = decide(g, &self.conf, risk, engine.name())?;
        decision.timings_ms = serde_json::json!({
            "preprocess": t1 - t0,
            "generate": t2 - t1,
            "decide": performance_now() - t2,
        });
        Ok(WebAnswer {
            decision,
            adapter: engine.adapter().map(str::to_owned),
            fallback: self.state.borrow().fallback.clone(),
        })
    }
}

/// A model ready to answer, with its Selector and calibration.
#[wasm_bindgen]
pub struct RelVqa {
    pub(crate) inner: Rc<Inner>,
    load_ms: f64,
}

#[wasm_bindgen]
impl RelVqa {
    /// From the bytes of `config.json`, `tokenizer.json`, `model.safetensors` and, when the
    /// model has them, `selector.safetensors`, `calibration.json` and
    /// `preprocessor_config.json`, on `backend` (`auto`, the default, `webgpu` or `cpu`). The
    /// family (Idefics3 / SmolVLM or Qwen2-VL) is the config's `model_type`. The bytes are
    /// dropped once the model is built.
    #[allow(clippy::too_many_arguments)]
    pub async fn load(
        config: Vec<u8>,
        tokenizer: Vec<u8>,
        weights: Vec<u8>,
        selector: Option<Vec<u8>>,
        calibration: Option<Vec<u8>>,
        backend: Option<String>,
        preprocessor: Option<Vec<u8>>,
    ) -> std::result::Result<RelVqa, JsError> {
        let t = performance_now();
        let choice = Choice::parse(backend.as_deref()).map_err(js_err)?;
        let files = ModelFiles {
            config: &config,
            tokenizer: &tokenizer,
            weights: &weights,
            tokenizer_config: None,
            chat_template: None,
            preprocessor: preprocessor.as_deref(),
        };
        let (engine, fallback) = Engine::open(
            choice,
            |b| AnyVqa::from_files(b, &files),
            |b| AnyVqa::from_files(b, &files),
        )
        .await
        .map_err(js_err)?;
        drop(weights);
        Self::finish(engine, fallback, selector, calibration, t)
    }

    /// From a package streamed into `loader` (every shard pushed and finished; its tensors
    /// are already on the loader's backend), the bytes of its tokenizer and, when the
    /// manifest lists them, of `selector.safetensors`, `calibration.json`,
    /// `tokenizer_config.json` and `chat_template.json` (the chat template; `generate` uses it
    /// too) and `preprocessor_config.json` (the image processor); each file is checked against
    /// the manifest's sha256. The backend is the loader's.
    #[wasm_bindgen(js_name = loadPackage)]
    pub async fn load_package(
        loader: PackageLoader,
        tokenizer: Vec<u8>,
        selector: Option<Vec<u8>>,
        calibration: Option<Vec<u8>>,
        tokenizer_config: Option<Vec<u8>>,
        chat_template: Option<Vec<u8>>,
        preprocessor: Option<Vec<u8>>,
    ) -> std::result::Result<RelVqa, JsError> {
        let t = performance_now();
        let m = loader.manifest();
        m.verify_file(&m.tokenizer.file, &tokenizer)
            .map_err(js_err)?;
        for (name, bytes) in [
            (SELECTOR_FILE, &selector),
            (CALIBRATION_FILE, &calibration),
            (TOKENIZER_CONFIG_FILE, &tokenizer_config),
            (CHAT_TEMPLATE_FILE, &chat_template),
            (PREPROCESSOR_FILE, &preprocessor),
        ] {
            if let Some(b) = bytes {
                m.verify_file(name, b).map_err(js_err)?;
            }
        }
        let chat =
            ChatTemplate::from_checkpoint(tokenizer_config.as_deref(), chat_template.as_deref())
                .map_err(js_err)?;
        let (_, built, fallback) = loader
            .build(&tokenizer, chat.as_ref(), preprocessor.as_deref())
            .map_err(js_err)?;
        let engine = Engine::from_built(built);
        let m = Self::finish(engine, fallback, selector, calibration, t)?;
        *m.inner.chat.borrow_mut() = chat;
        Ok(m)
    }

    pub(crate) fn finish(
        engine: Engine,
        fallback: Option<String>,
        selector: Option<Vec<u8>>,
        calibration: Option<Vec<u8>>,
        t: f64,
    ) -> std::result::Result<RelVqa, JsError> {
        let conf = Confidence::from_bytes(
            selector.as_deref(),
            calibration.as_deref(),
            engine.hidden_size(),
        )
        .map_err(js_err)?;
        Ok(RelVqa {
            inner: Rc::new(Inner {
                state: RefCell::new(State {
                    engine: Rc::new(engine),
                    fallback,
                    gpu_lost: None,
                }),
                conf,
                chat: RefCell::new(None),
            }),
            load_ms: performance_now() - t,
        })
    }

    /// The `compile` stage of a load: a one-token answer on a blank image so that WebGPU
    /// creates every pipeline now rather than in the first question. Resolves to its milliseconds (0
    /// on the CPU). A GPU failure here sets `gpuLost`, as in `ask`.
    #[wasm_bindgen(js_name = warmUp)]
    pub fn warm_up(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let t = performance_now();
            let engine = inner.engine();
            if let Err(e) = engine.warm_up().await {
                if gpu_gave_out(&e) {
                    inner.state.borrow_mut().gpu_lost = Some(e.to_string());
                }
                return Err(JsValue::from(js_err(e)));
            }
            Ok(JsValue::from_f64(performance_now() - t))
        })
    }

    /// Why WebGPU gave out (device lost, out of memory, a limit) during an answer or the
    /// warm-up: load the model again on the CPU and set `fallback` to this. Undefined
    /// otherwise.
    #[wasm_bindgen(getter, js_name = gpuLost)]
    pub fn gpu_lost(&self) -> Option<String> {
        self.inner.state.borrow().gpu_lost.clone()
    }

    /// Which backend answers now: `webgpu` or `cpu`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.inner.engine().name().into()
    }

    /// The WebGPU adapter's name (SwiftShader in headless Chromium); undefined on the CPU.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        self.inner.engine().adapter().map(str::to_owned)
    }

    /// Why the model runs on the CPU although WebGPU was asked for (the typed GPU error).
    #[wasm_bindgen(getter)]
    pub fn fallback(&self) -> Option<String> {
        self.inner.state.borrow().fallback.clone()
    }

    /// Set by the worker on a model it loaded again on the CPU after `gpuLost`, so that
    /// answers say why they come from the CPU.
    #[wasm_bindgen(setter)]
    pub fn set_fallback(&self, why: Option<String>) {
        self.inner.state.borrow_mut().fallback = why;
    }

    /// Milliseconds `load` spent opening the backend and building the model from bytes.
    #[wasm_bindgen(getter, js_name = loadMs)]
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Answer `question` about a PNG or JPEG image at target `risk` (0.01, 0.05, 0.1 or 0.2).
    /// Resolves to `{answer, confidence, confidence_source, maxprob, selector, abstain,
    /// threshold, reason, backend, adapter, fallback, timings_ms, ...}`: the `relvqa ask
    /// --json` object plus where it ran.
    pub fn ask(&self, image: Vec<u8>, question: String, risk: f64) -> js_sys::Promise {
        // The future must be 'static (wasm-bindgen): it owns its arguments and a handle on
        // the model, not a borrow of `self`.
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let a = inner
                .ask(&image, &question, risk)
                .await
                .map_err(|e| JsValue::from(js_err(e)))?;
            let ser = serde_wasm_bindgen::Serializer::json_compatible();
            a.serialize(&ser)
                .map_err(|e| JsValue::from(JsError::new(&e.to_string())))
        })
    }

    /// Test hook: destroy the WebGPU device, as a driver reset would, so the browser tests can
    /// check the fallback to the CPU. Returns whether there was a device to destroy.
    #[wasm_bindgen(js_name = loseDeviceForTest)]
    pub fn lose_device_for_test(&self) -> bool {
        match &*self.inner.engine() {
            Engine::Gpu(g) => {
                g.vqa.backend().context().destroy();
                true
            }
            Engine::Cpu(_) => false,
        }
    }
}
