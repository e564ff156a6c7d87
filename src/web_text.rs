//! Text-only generation in the page: the language model alone, prompted through the
//! checkpoint's chat template. This is how a converted real checkpoint (SmolLM2 from GGUF,
//! `relvqa convert`) shows in the browser that its weights survived conversion and
//! quantization, and where the browser's prefill and decode speed is measured at real size.
//! The prompt, the stop tokens and the greedy loop are the library's, shared with
//! `relvqa generate`, so the two give the same ids for the same model.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use std::rc::Rc;

use crate::error::{Error, Result};
use crate::model::chat::{user_prompt, ChatTemplate};
use crate::model::text_gen::{TextGeneration, TextReport};
use crate::web::{gpu_gave_out, js_err, on_engine, performance_now, Engine, Inner, RelVqa};

/// What `generate` resolves to: `relvqa generate --json`'s object plus where it ran.
#[derive(Serialize)]
struct WebText<'a> {
    #[serde(flatten)]
    report: TextReport<'a>,
    adapter: Option<String>,
    fallback: Option<String>,
}

impl Engine {
    async fn generate_text(&self, prompt: &str, max_new: usize) -> Result<TextGeneration> {
        let now = || performance_now();
        on_engine!(self, v => v.generate(prompt, max_new, &now).await)
    }
}

impl Inner {
    async fn generate(&self, message: &str, max_new: usize, raw: bool) -> Result<JsValue> {
        let prompt = user_prompt(self.chat.borrow().as_ref(), message, raw)?;
        let engine = self.engine();
        let g = match engine.generate_text(&prompt, max_new).await {
            Err(e) if gpu_gave_out(&e) && matches!(*engine, Engine::Gpu(_)) => {
                self.state.borrow_mut().gpu_lost = Some(e.to_string());
                return Err(e);
            }
            r => r?,
        };
        let out = WebText {
            report: g.report(&prompt, engine.name()),
            adapter: engine.adapter().map(str::to_owned),
            fallback: self.state.borrow().fallback.clone(),
        };
        let ser = serde_wasm_bindgen::Serializer::json_compatible();
        out.serialize(&ser)
            .map_err(|e| crate::error::Error::Invalid(e.to_string()))
    }
}

#[wasm_bindgen]
impl RelVqa {
    /// Use the chat template in these checkpoint files (`tokenizer_config.json`,
    /// `chat_template.json`; either may be absent) for `generate`, and for `ask` when it places
    /// an image (real SmolVLM's). Returns whether one was found. Packages get theirs, checked
    /// against the manifest, in `loadPackage`.
    #[wasm_bindgen(js_name = setChatTemplate)]
    pub fn set_chat_template(
        &self,
        tokenizer_config: Option<Vec<u8>>,
        chat_template: Option<Vec<u8>>,
    ) -> std::result::Result<bool, JsError> {
        let t =
            ChatTemplate::from_checkpoint(tokenizer_config.as_deref(), chat_template.as_deref())
                .map_err(js_err)?;
        let found = t.is_some();
        {
            let mut state = self.inner.state.borrow_mut();
            // The worker handles one message at a time, so no answer holds the engine now.
            let engine = Rc::get_mut(&mut state.engine).ok_or_else(|| {
                js_err(Error::Invalid(
                    "the model is answering; set its chat template before asking".into(),
                ))
            })?;
            engine.set_chat(t.as_ref());
        }
        *self.inner.chat.borrow_mut() = t;
        Ok(found)
    }

    /// Whether `generate` can render a chat prompt (else only `raw` prompts work).
    #[wasm_bindgen(getter, js_name = hasChatTemplate)]
    pub fn has_chat_template(&self) -> bool {
        self.inner.chat.borrow().is_some()
    }

    /// Greedy text from the language model alone for the user `message`, rendered with the
    /// chat template (or continued as is when `raw`), at most `max_new_tokens` tokens.
    /// Resolves to `{prompt, text, ids, prompt_tokens, new_tokens, stopped, backend,
    /// prefill_ms, prefill_tokens_per_s, decode_ms, decode_tokens_per_s, adapter, fallback}`.
    /// A WebGPU failure sets `gpuLost`, as in `ask`.
    pub fn generate(&self, message: String, max_new_tokens: u32, raw: bool) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            inner
                .generate(&message, max_new_tokens as usize, raw)
                .await
                .map_err(|e| JsValue::from(js_err(e)))
        })
    }
}
