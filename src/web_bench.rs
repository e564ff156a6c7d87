//! The browser benchmark's wasm API (`www/bench.html`, `www/bench-worker.js`): answer the same
//! val, ID-test and OOD-test questions `relvqa eval --out` answers, with the same scoring
//! ([`crate::eval::predict::predict`]), and compute the report's metrics on their mixtures
//! with the same code ([`crate::eval::reliability`]). A test checks that the page's numbers
//! equal the CLI's on the same questions.
//!
//! The backend is explicit here (`webgpu` or `cpu`, no silent fallback): a benchmark must say
//! what it measured.

use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::backend::cpu::CpuBackend;
use crate::backend::wgpu::WgpuBackend;
use crate::error::{Error, Result};
use crate::eval::ood::{id_item, ood_item, EasyVqa, Item};
use crate::eval::predict::{predict, Scored, Selectors};
use crate::eval::reliability::{mixed, mixture_result, MixtureResult};
use crate::eval::shapes::Split;
use crate::metrics::CurvePoint;
use crate::model::any_vqa::AnyVqa;
use crate::model::generate::Vqa;
use crate::model::loader::load_from_bytes;
use crate::selector::mlp::Selector;
use crate::selector::store::{self, SELECTOR_FILE};
use crate::web_stream::{Built, PackageLoader};

fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

// One per benchmark session, behind an `Rc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Cpu(Vqa<CpuBackend>),
    Gpu(Vqa<WgpuBackend>),
}

struct Inner {
    engine: Engine,
    selector: Option<Selector>,
    easy: Option<EasyVqa>,
}

impl Inner {
    fn item(&self, set: &str, index: u64) -> Result<Item> {
        match set {
            "val" => Ok(id_item(Split::Val, index)),
            "id" => Ok(id_item(Split::Test, index)),
            "ood" => {
                let easy = self.easy.as_ref().ok_or_else(|| {
                    Error::Invalid("OOD questions need easy-VQA: call setEasyVqa first".into())
                })?;
                ood_item(Split::Test, index, easy)
            }
            other => Err(Error::Invalid(format!(
                "question set `{other}` is not one of val, id, ood"
            ))),
        }
    }

    async fn answer(&self, set: &str, index: u64) -> Result<Scored> {
        let item = self.item(set, index)?;
        let sel = Selectors {
            own: self.selector.as_ref(),
            f16: None,
        };
        match &self.engine {
            Engine::Cpu(v) => predict(v, &item, sel).await,
            Engine::Gpu(v) => predict(v, &item, sel).await,
        }
    }
}

/// A model loaded for benchmarking, with its Selector and (for OOD questions) easy-VQA.
#[wasm_bindgen]
pub struct BenchSession {
    inner: Rc<Inner>,
    backend: String,
    adapter: Option<String>,
}

#[wasm_bindgen]
impl BenchSession {
    /// From a model directory's files, on `backend` (`webgpu` or `cpu`).
    pub async fn load(
        config: Vec<u8>,
        tokenizer: Vec<u8>,
        weights: Vec<u8>,
        selector: Option<Vec<u8>>,
        backend: String,
    ) -> std::result::Result<BenchSession, JsError> {
        let (engine, adapter) = match backend.as_str() {
            "cpu" => (
                Engine::Cpu(
                    load_from_bytes(CpuBackend::new(), &config, &tokenizer, &weights)
                        .map_err(js_err)?,
                ),
                None,
            ),
            "webgpu" => {
                let b = WgpuBackend::new().await.map_err(js_err)?;
                let adapter = b.context().info().adapter.clone();
                let v = load_from_bytes(b, &config, &tokenizer, &weights).map_err(js_err)?;
                (Engine::Gpu(v), Some(adapter))
            }
            other => {
                return Err(js_err(Error::Invalid(format!(
                    "benchmark backend `{other}` is not one of webgpu, cpu"
                ))))
            }
        };
        Self::open(engine, adapter, selector, backend)
    }

    /// From a package streamed into `loader` (as the page's worker does: each tensor is on
    /// the loader's backend already) and its tokenizer and Selector files, checked against
    /// the manifest. `backend` (`webgpu` or `cpu`) must be the loader's: a benchmark never
    /// falls back silently.
    #[wasm_bindgen(js_name = loadPackage)]
    pub async fn load_package(
        loader: PackageLoader,
        tokenizer: Vec<u8>,
        selector: Option<Vec<u8>>,
        backend: String,
    ) -> std::result::Result<BenchSession, JsError> {
        if loader.backend_name() != backend {
            return Err(js_err(Error::Invalid(format!(
                "the benchmark asked for `{backend}` but the package was loaded on `{}`{}",
                loader.backend_name(),
                loader
                    .fallback()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            ))));
        }
        let m = loader.manifest();
        m.verify_file(&m.tokenizer.file, &tokenizer)
            .map_err(js_err)?;
        if let Some(b) = &selector {
            m.verify_file(SELECTOR_FILE, b).map_err(js_err)?;
        }
        // The benchmark's questions are the shapes task's, which only the Idefics3 models
        // this project trains answer.
        let not_shapes = |a: crate::model::arch::Architecture| {
            js_err(Error::Config(format!(
                "the benchmark runs the shapes task's idefics3 models; this package holds a `{}` model",
                a.name()
            )))
        };
        let (engine, adapter) = match loader.build(&tokenizer, None, None).map_err(js_err)?.1 {
            Built::Cpu(AnyVqa::Idefics3(v)) => (Engine::Cpu(v), None),
            Built::Gpu(AnyVqa::Idefics3(v), adapter) => (Engine::Gpu(v), Some(adapter)),
            Built::Cpu(m) => return Err(not_shapes(m.architecture())),
            Built::Gpu(m, _) => return Err(not_shapes(m.architecture())),
        };
        Self::open(engine, adapter, selector, backend)
    }

    fn open(
        engine: Engine,
        adapter: Option<String>,
        selector: Option<Vec<u8>>,
        backend: String,
    ) -> std::result::Result<BenchSession, JsError> {
        let selector = selector
            .map(|b| store::from_bytes(&b))
            .transpose()
            .map_err(js_err)?;
        Ok(BenchSession {
            inner: Rc::new(Inner {
                engine,
                selector,
                easy: None,
            }),
            backend,
            adapter,
        })
    }

    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        self.adapter.clone()
    }

    /// easy-VQA's test split (the external OOD set) from its files: `answers.txt`,
    /// `test/questions.json`, and the PNG bytes of image `ids[i]` in `images[i]`.
    #[wasm_bindgen(js_name = setEasyVqa)]
    pub fn set_easy_vqa(
        &mut self,
        answers: String,
        questions: Vec<u8>,
        ids: Vec<u32>,
        images: js_sys::Array,
    ) -> std::result::Result<(), JsError> {
        let inner = Rc::get_mut(&mut self.inner).ok_or_else(|| {
            JsError::new("setEasyVqa must be called before the first answer is asked for")
        })?;
        let easy = EasyVqa::parse("easy-vqa", &answers, &questions, |id| {
            let at = ids.iter().position(|&i| i == id).ok_or_else(|| {
                Error::Dataset(format!("easy-VQA image {id}.png was not supplied"))
            })?;
            let bytes = js_sys::Uint8Array::new(&images.get(at as u32)).to_vec();
            crate::eval::ood::easyvqa::decode_image(&format!("{id}.png"), &bytes)
        })
        .map_err(js_err)?;
        inner.easy = Some(easy);
        Ok(())
    }

    /// Answer and score question `index` of `set` (`val`, `id` or `ood`): the `Scored` row of
    /// `relvqa eval --out`'s predictions.
    pub fn answer(&self, set: String, index: u32) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let s = inner
                .answer(&set, index as u64)
                .await
                .map_err(|e| JsValue::from(js_err(e)))?;
            let ser = serde_wasm_bindgen::Serializer::json_compatible();
            s.serialize(&ser)
                .map_err(|e| JsValue::from(JsError::new(&e.to_string())))
        })
    }
}

/// One mixture's metrics plus each estimator's risk-coverage curve (for the page's plots).
#[derive(Serialize)]
struct BenchMixture {
    #[serde(flatten)]
    result: MixtureResult,
    curves: std::collections::BTreeMap<String, Vec<CurvePoint>>,
}

/// The report's metrics for scored `val`, `id` and `ood` rows (arrays of `answer` results) at
/// each OOD share in `percents`, as a JSON string (the maps are keyed by numbers, as in
/// `report.json`): `[{ood_percent, n, n_ood, accuracy, estimators: {maxprob, selector: {auc,
/// coverage_at_risk, phi, ece}}, curves}]`.
#[wasm_bindgen(js_name = benchReport)]
pub fn bench_report(
    val: JsValue,
    id: JsValue,
    ood: JsValue,
    percents: Vec<u32>,
) -> std::result::Result<String, JsError> {
    let rows = |v: JsValue, what: &str| -> std::result::Result<Vec<Scored>, JsError> {
        serde_wasm_bindgen::from_value(v)
            .map_err(|e| JsError::new(&format!("{what} rows are not scored answers: {e}")))
    };
    let (val, id, ood) = (rows(val, "val")?, rows(id, "id")?, rows(ood, "ood")?);
    let mut out = Vec::new();
    for pct in percents {
        let (mix, n_ood) = mixed(&id, &ood, pct).map_err(js_err)?;
        let result = mixture_result(&val, &mix, pct, n_ood).map_err(js_err)?;
        let curves = result
            .estimators
            .iter()
            .map(|(k, m)| (k.clone(), m.curve.clone()))
            .collect();
        out.push(BenchMixture { result, curves });
    }
    serde_json::to_string(&out).map_err(|e| JsError::new(&e.to_string()))
}
