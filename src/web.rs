//! The WebAssembly API the web page's worker calls (`www/worker.js`): build a model from the
//! model directory's files fetched by JavaScript, then answer questions with the same decision
//! rule as `relvqa ask` ([`crate::selector::decision::decide`]).
//!
//! Errors cross the boundary as JS `Error`s carrying the crate's typed message.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasm_bindgen::prelude::*;

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::model::generate::Vqa;
use crate::model::image::{decode_image, image_to_pixels};
use crate::model::loader::load_from_bytes;
use crate::selector::decision::{decide, Confidence};

#[wasm_bindgen]
extern "C" {
    // `performance` exists in windows and workers alike; `Instant` does not exist on wasm.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Drive a future that the CPU backend has already completed. The CPU backend's readback is a
/// ready future (ARCHITECTURE.md, "Async readback only"), so one poll finishes it; blocking
/// would need a condvar, which the browser does not allow.
fn run_ready<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(Error::Invalid(
            "the CPU backend returned a pending future; this is a bug in relvqa".into(),
        )),
    }
}

/// A model ready to answer, with its Selector and calibration.
#[wasm_bindgen]
pub struct RelVqa {
    vqa: Vqa<CpuBackend>,
    conf: Confidence,
    load_ms: f64,
}

#[wasm_bindgen]
impl RelVqa {
    /// From the bytes of `config.json`, `tokenizer.json`, `model.safetensors` and, when the
    /// model has them, `selector.safetensors` and `calibration.json`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        config: &[u8],
        tokenizer: &[u8],
        weights: &[u8],
        selector: Option<Vec<u8>>,
        calibration: Option<Vec<u8>>,
    ) -> std::result::Result<RelVqa, JsError> {
        let t = performance_now();
        let vqa = load_from_bytes(CpuBackend::new(), config, tokenizer, weights).map_err(js_err)?;
        let conf = Confidence::from_bytes(
            selector.as_deref(),
            calibration.as_deref(),
            vqa.model.cfg.text_config.hidden_size,
        )
        .map_err(js_err)?;
        Ok(RelVqa {
            vqa,
            conf,
            load_ms: performance_now() - t,
        })
    }

    /// Which backend answers: `cpu` until the WebGPU backend lands.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        "cpu".into()
    }

    /// Milliseconds the constructor spent building the model from bytes.
    #[wasm_bindgen(getter, js_name = loadMs)]
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// Answer `question` about a PNG or JPEG image at target `risk` (0.01, 0.05, 0.1 or 0.2).
    /// Returns `{answer, confidence, confidence_source, maxprob, selector, abstain, threshold,
    /// reason, backend, timings_ms, ...}`: the `relvqa ask --json` object.
    pub fn ask(
        &self,
        image: &[u8],
        question: &str,
        risk: f64,
    ) -> std::result::Result<JsValue, JsError> {
        let t0 = performance_now();
        let img = decode_image(image).map_err(js_err)?;
        let px =
            image_to_pixels(&img, self.vqa.model.cfg.vision_config.image_size).map_err(js_err)?;
        let t1 = performance_now();
        let g = run_ready(self.vqa.answer(&px, question)).map_err(js_err)?;
        let t2 = performance_now();
        let mut d = decide(g, &self.conf, risk, "cpu").map_err(js_err)?;
        d.timings_ms = serde_json::json!({
            "preprocess": t1 - t0,
            "generate": t2 - t1,
            "decide": performance_now() - t2,
        });
        let ser = serde_wasm_bindgen::Serializer::json_compatible();
        serde::Serialize::serialize(&d, &ser).map_err(|e| JsError::new(&e.to_string()))
    }
}
