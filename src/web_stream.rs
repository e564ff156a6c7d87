//! The streaming side of the wasm API: `PackageLoader` wraps the package's [`StreamReader`] so
//! the worker can push each shard's bytes as `fetch` delivers them (`response.body`'s reader,
//! or the Cache API on a repeat visit). Each tensor is verified against its sha256 as soon as
//! its last byte arrives and goes straight to the backend the loader was opened for (WebGPU
//! buffers, or the CPU backend's tensors) through a [`crate::model::weights::WeightSink`]; its host copy is dropped
//! there, so neither the shards nor the decoded tensors pile up in wasm memory.
//! `RelVqa.loadPackage` then assembles the model from the weights already on the backend.
//!
//! A download cut mid-shard resumes by pushing the rest of the same shard (an HTTP `Range`
//! request from [`PackageLoader::shard_received`]): the reader does not care where one chunk
//! ends and the next begins.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::backend::cpu::CpuBackend;
use crate::backend::wgpu::WgpuBackend;
use crate::error::{Error, Result};
use crate::model::any_vqa::{AnySink, AnyVqa};
use crate::model::chat::ChatTemplate;
use crate::package::{LoadedTensor, Manifest, StreamReader};
use crate::quant::hqq::HqqOptions;
use crate::quant::load_time::HqqStage;
use crate::quant::QuantSpec;
use crate::web::{js_err, Choice};

/// One shard as the worker needs it: what to fetch, how long it is, its cache key's digest.
#[derive(Serialize)]
struct ShardInfo<'a> {
    file: &'a str,
    bytes: u64,
    sha256: &'a str,
}

/// What `progress()` reports.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgressInfo {
    bytes_received: u64,
    bytes_total: u64,
    tensors_loaded: usize,
    tensors_total: usize,
    /// Tensors already on the backend, and their bytes as the package encoded them.
    tensors_uploaded: usize,
    bytes_uploaded: u64,
    /// Linears quantized in the tab so far, and how many there are (0 without `quantizeBits`).
    quantized: usize,
    quantize_total: usize,
}

/// Where completed tensors go: the backend the model will run on.
pub(crate) enum Sink {
    Cpu(AnySink<CpuBackend>),
    Gpu {
        sink: AnySink<WgpuBackend>,
        adapter: String,
    },
}

impl Sink {
    fn accept(&mut self, t: LoadedTensor) -> Result<()> {
        match self {
            Sink::Cpu(s) => s.accept(t),
            Sink::Gpu { sink, .. } => sink.accept(t),
        }
    }

    fn uploaded(&self) -> (usize, u64) {
        match self {
            Sink::Cpu(s) => s.uploaded(),
            Sink::Gpu { sink, .. } => sink.uploaded(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Sink::Cpu(_) => "cpu",
            Sink::Gpu { .. } => "webgpu",
        }
    }
}

/// The model a finished loader built, on its backend.
// Built once per load and moved straight into the engine: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Built {
    Cpu(AnyVqa<CpuBackend>),
    Gpu(AnyVqa<WgpuBackend>, String),
}

/// A package being received: the validated manifest, its streaming reader and the backend
/// its tensors go to as they complete.
#[wasm_bindgen]
pub struct PackageLoader {
    manifest: Manifest,
    reader: StreamReader,
    sink: Sink,
    /// Why the loader is on the CPU although WebGPU was asked for.
    fallback: Option<String>,
    /// A GPU error while uploading: the load must restart on the CPU (the tensors already
    /// uploaded are on a device that failed, and their host copies are gone by design).
    gpu_failed: Option<String>,
    /// HQQ in the tab: each linear of an f16 package quantized as it completes.
    hqq: Option<HqqStage>,
}

fn to_js<T: Serialize>(v: &T) -> std::result::Result<JsValue, JsError> {
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    v.serialize(&ser).map_err(|e| JsError::new(&e.to_string()))
}

impl PackageLoader {
    /// Once every shard was finished: the manifest, the model assembled from the uploaded
    /// weights with the package's small files, and why it is on the CPU if WebGPU was asked
    /// for.
    pub(crate) fn build(
        self,
        tokenizer: &[u8],
        template: Option<&ChatTemplate>,
        preprocessor: Option<&[u8]>,
    ) -> Result<(Manifest, Built, Option<String>)> {
        self.reader.finish()?;
        let built = match self.sink {
            Sink::Cpu(s) => Built::Cpu(s.build(tokenizer, template, preprocessor)?),
            Sink::Gpu { sink, adapter } => {
                Built::Gpu(sink.build(tokenizer, template, preprocessor)?, adapter)
            }
        };
        Ok((self.manifest, built, self.fallback))
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn backend_name(&self) -> &'static str {
        self.sink.name()
    }
}

#[wasm_bindgen]
impl PackageLoader {
    /// Parse and validate `manifest.json` (sizes, offsets and counts are checked before
    /// anything is allocated) and open the backend the tensors will go to: `auto` (the
    /// default) and `webgpu` try WebGPU and fall back to the CPU (`fallback` says why), `cpu`
    /// never touches the GPU. With `quantizeBits` (8, 4, 3 or 2), each of the language
    /// model's linears of an f16 package is quantized with HQQ (group 64) as it completes,
    /// before it goes to the backend: a bit width with no package of its own.
    pub async fn open(
        manifest: Vec<u8>,
        backend: Option<String>,
        quantize_bits: Option<u32>,
    ) -> std::result::Result<PackageLoader, JsError> {
        let manifest = Manifest::from_json(&manifest).map_err(js_err)?;
        let reader = StreamReader::new(&manifest).map_err(js_err)?;
        let hqq = match quantize_bits {
            None => None,
            Some(bits) => {
                let spec = QuantSpec::new(bits, 64).map_err(js_err)?;
                Some(
                    HqqStage::for_manifest(&manifest, spec, HqqOptions::default())
                        .map_err(js_err)?,
                )
            }
        };
        let choice = Choice::parse(backend.as_deref()).map_err(js_err)?;
        let cpu = |m: &Manifest| AnySink::for_manifest(CpuBackend::new(), m).map(Sink::Cpu);
        let (sink, fallback) = if choice == Choice::Cpu {
            (cpu(&manifest).map_err(js_err)?, None)
        } else {
            match WgpuBackend::new().await {
                Ok(b) => {
                    let adapter = b.context().info().adapter.clone();
                    let sink = AnySink::for_manifest(b, &manifest).map_err(js_err)?;
                    (Sink::Gpu { sink, adapter }, None)
                }
                Err(e @ Error::Gpu { .. }) => {
                    (cpu(&manifest).map_err(js_err)?, Some(e.to_string()))
                }
                Err(e) => return Err(js_err(e)),
            }
        };
        Ok(PackageLoader {
            manifest,
            reader,
            sink,
            fallback,
            gpu_failed: None,
            hqq,
        })
    }

    /// Where the tensors go: `webgpu` or `cpu`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.sink.name().into()
    }

    /// Why the tensors go to the CPU although WebGPU was asked for (the typed GPU error).
    #[wasm_bindgen(getter)]
    pub fn fallback(&self) -> Option<String> {
        self.fallback.clone()
    }

    /// Set when a `push` failed because the GPU did (out of memory, a limit, a lost device):
    /// the message to show when the load restarts on the CPU.
    #[wasm_bindgen(getter, js_name = gpuFailed)]
    pub fn gpu_failed(&self) -> Option<String> {
        self.gpu_failed.clone()
    }

    /// `[{file, bytes, sha256}]` in shard-index order.
    pub fn shards(&self) -> std::result::Result<JsValue, JsError> {
        let v: Vec<ShardInfo> = self
            .manifest
            .shards
            .iter()
            .map(|s| ShardInfo {
                file: &s.file,
                bytes: s.bytes,
                sha256: &s.sha256,
            })
            .collect();
        to_js(&v)
    }

    /// The tokenizer's file name inside the package.
    #[wasm_bindgen(getter, js_name = tokenizerFile)]
    pub fn tokenizer_file(&self) -> String {
        self.manifest.tokenizer.file.clone()
    }

    /// Whether the manifest lists the extra file `name` (`selector.safetensors`,
    /// `calibration.json`).
    #[wasm_bindgen(js_name = hasFile)]
    pub fn has_file(&self, name: &str) -> bool {
        self.manifest.file(name).is_some()
    }

    /// Feed the next bytes of shard `shard`; returns how many tensors they completed (each
    /// verified against its sha256 and already on the backend). An error (a checksum mismatch
    /// names the tensor and the shard) leaves that shard unusable; a GPU error also sets
    /// `gpuFailed`.
    pub fn push(&mut self, shard: usize, chunk: &[u8]) -> std::result::Result<usize, JsError> {
        let done = self.reader.push(shard, chunk).map_err(js_err)?;
        let n = done.len();
        for t in done {
            let t = match &mut self.hqq {
                Some(h) => h.apply(t).map_err(js_err)?,
                None => t,
            };
            if let Err(e) = self.sink.accept(t) {
                if matches!(e, Error::Gpu { .. }) {
                    self.gpu_failed = Some(e.to_string());
                }
                return Err(js_err(e));
            }
        }
        Ok(n)
    }

    /// Declare shard `shard` complete: checks its length and whole-file sha256.
    #[wasm_bindgen(js_name = finishShard)]
    pub fn finish_shard(&mut self, shard: usize) -> std::result::Result<(), JsError> {
        self.reader.finish_shard(shard).map_err(js_err)
    }

    /// Bytes of shard `shard` received so far: the start of a resuming `Range` request.
    #[wasm_bindgen(js_name = shardReceived)]
    pub fn shard_received(&self, shard: usize) -> std::result::Result<f64, JsError> {
        let n = self.reader.shard_received(shard).ok_or_else(|| {
            js_err(Error::Package(format!(
                "shard index {shard} is out of range (the manifest lists {} shards)",
                self.manifest.shards.len()
            )))
        })?;
        // Shards are at most 64 MiB, far inside f64's exact integers.
        Ok(n as f64)
    }

    /// `{bytesReceived, bytesTotal, tensorsLoaded, tensorsTotal, tensorsUploaded,
    /// bytesUploaded, quantized, quantizeTotal}`.
    pub fn progress(&self) -> std::result::Result<JsValue, JsError> {
        let p = self.reader.progress();
        let (tensors_uploaded, bytes_uploaded) = self.sink.uploaded();
        let (quantized, quantize_total) = self.hqq.as_ref().map_or((0, 0), HqqStage::progress);
        to_js(&ProgressInfo {
            bytes_received: p.bytes_received,
            bytes_total: p.bytes_total,
            tensors_loaded: p.tensors_loaded,
            tensors_total: p.tensors_total,
            tensors_uploaded,
            bytes_uploaded,
            quantized,
            quantize_total,
        })
    }
}
