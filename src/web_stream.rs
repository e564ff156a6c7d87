//! The streaming side of the wasm API: `PackageLoader` wraps the package's [`StreamReader`] so
//! the worker can push each shard's bytes as `fetch` delivers them (`response.body`'s reader,
//! or the Cache API on a repeat visit). Tensors are verified against their sha256 and decoded
//! as soon as their last byte arrives; the shard bytes themselves are never kept in wasm
//! memory, only the decoded tensors that `RelVqa.loadPackage` turns into the model.
//!
//! A download cut mid-shard resumes by pushing the rest of the same shard (an HTTP `Range`
//! request from [`PackageLoader::shard_received`]): the reader does not care where one chunk
//! ends and the next begins.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::error::{Error, Result};
use crate::package::{LoadedTensor, Manifest, StreamReader};
use crate::web::js_err;

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
}

/// A package being received: the validated manifest, its streaming reader and the tensors
/// completed so far.
#[wasm_bindgen]
pub struct PackageLoader {
    manifest: Manifest,
    reader: StreamReader,
    tensors: Vec<LoadedTensor>,
}

fn to_js<T: Serialize>(v: &T) -> std::result::Result<JsValue, JsError> {
    let ser = serde_wasm_bindgen::Serializer::json_compatible();
    v.serialize(&ser).map_err(|e| JsError::new(&e.to_string()))
}

impl PackageLoader {
    /// The manifest, the tokenizer's bytes and every tensor, once every shard was finished.
    pub(crate) fn into_parts(self) -> Result<(Manifest, Vec<LoadedTensor>)> {
        self.reader.finish()?;
        Ok((self.manifest, self.tensors))
    }
}

#[wasm_bindgen]
impl PackageLoader {
    /// Parse and validate `manifest.json` (sizes, offsets and counts are checked before
    /// anything is allocated).
    #[wasm_bindgen(constructor)]
    pub fn new(manifest: &[u8]) -> std::result::Result<PackageLoader, JsError> {
        let manifest = Manifest::from_json(manifest).map_err(js_err)?;
        let reader = StreamReader::new(&manifest).map_err(js_err)?;
        Ok(PackageLoader {
            tensors: Vec::with_capacity(manifest.tensors.len()),
            manifest,
            reader,
        })
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
    /// verified against its sha256). An error (a checksum mismatch names the tensor and the
    /// shard) leaves that shard unusable.
    pub fn push(&mut self, shard: usize, chunk: &[u8]) -> std::result::Result<usize, JsError> {
        let done = self.reader.push(shard, chunk).map_err(js_err)?;
        let n = done.len();
        self.tensors.extend(done);
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

    /// `{bytesReceived, bytesTotal, tensorsLoaded, tensorsTotal}`.
    pub fn progress(&self) -> std::result::Result<JsValue, JsError> {
        let p = self.reader.progress();
        to_js(&ProgressInfo {
            bytes_received: p.bytes_received,
            bytes_total: p.bytes_total,
            tensors_loaded: p.tensors_loaded,
            tensors_total: p.tensors_total,
        })
    }
}
