//! The quantized package: `manifest.json` + `tokenizer.json` + shards of at most 64 MiB; a
//! tensor larger than that runs on across consecutive shards (`layout.rs`).
//!
//! The manifest and the streaming reader are target-independent, because the web page loads
//! packages through them chunk by chunk as `fetch` delivers bytes. Writing, and reading a whole
//! directory, are native helpers over the same reader, so both paths verify the same way.

pub mod codec;
pub mod decoder;
#[cfg(not(target_arch = "wasm32"))]
pub mod extra;
pub mod layout;
pub mod manifest;
pub mod stream;
#[cfg(not(target_arch = "wasm32"))]
pub mod writer;

pub use codec::{LoadedTensor, PackageTensor, TensorData};
#[cfg(not(target_arch = "wasm32"))]
pub use extra::{read_model_file, write_model_file};
pub use layout::TensorPart;
pub use manifest::{
    Encoding, FileEntry, FloatDtype, Manifest, QuantEncoding, ShardEntry, TensorEntry,
    MANIFEST_FILE, MAX_SHARD_BYTES, MAX_TENSOR_BYTES,
};
pub use stream::{Progress, StreamReader};
#[cfg(not(target_arch = "wasm32"))]
pub use writer::write_package;

#[cfg(not(target_arch = "wasm32"))]
mod dir {
    use std::collections::HashMap;
    use std::fs::File;
    use std::io::Read;
    use std::path::Path;

    use sha2::{Digest, Sha256};

    use super::manifest::{parse_sha256, MAX_MANIFEST_BYTES};
    use super::{LoadedTensor, Manifest, StreamReader, MANIFEST_FILE, MAX_SHARD_BYTES};
    use crate::error::{Error, Result};

    /// Native reads go through the streaming reader in pieces of this size, so the directory
    /// path is tested by the same code, with the same memory bound, as the browser path.
    const READ_CHUNK: usize = 1 << 20;

    /// Read a small file whole, refusing it from its metadata if it exceeds `cap`.
    fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>> {
        let shown = path.display().to_string();
        let f = File::open(path).map_err(|e| Error::io(shown.clone(), e))?;
        let len = f.metadata().map_err(|e| Error::io(shown.clone(), e))?.len();
        if len > cap as u64 {
            return Err(Error::Package(format!(
                "{shown} is {len} bytes, more than the {cap} allowed"
            )));
        }
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.take(cap as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::io(shown, e))?;
        Ok(out)
    }

    /// Whether `dir` holds a package (rather than a Hugging Face model directory).
    pub fn is_package_dir(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).is_file()
    }

    /// The manifest and the tokenizer's bytes (checked against the manifest's sha256).
    pub fn open_package_dir(dir: &Path) -> Result<(Manifest, Vec<u8>)> {
        let manifest =
            Manifest::from_json(&read_capped(&dir.join(MANIFEST_FILE), MAX_MANIFEST_BYTES)?)?;
        let tok_path = dir.join(&manifest.tokenizer.file);
        let tokenizer = read_capped(&tok_path, MAX_SHARD_BYTES)?;
        let expected = parse_sha256("tokenizer", &manifest.tokenizer.sha256)?;
        let got = Sha256::digest(&tokenizer);
        if got.as_slice() != expected {
            return Err(Error::Package(format!(
                "{}: sha256 is {}, the manifest says {}; the tokenizer is corrupt or from \
                 another export — re-download the package",
                tok_path.display(),
                hex::encode(got),
                manifest.tokenizer.sha256
            )));
        }
        Ok((manifest, tokenizer))
    }

    /// Stream every shard of the package in `dir` through the [`StreamReader`], handing each
    /// tensor to `on_tensor` as soon as it is verified (in the order their last bytes lie:
    /// shard order, offset order within one). Shards go in index order, which a tensor that
    /// spans several needs.
    pub fn stream_package_dir(
        dir: &Path,
        manifest: &Manifest,
        mut on_tensor: impl FnMut(LoadedTensor) -> Result<()>,
    ) -> Result<()> {
        let mut reader = StreamReader::new(manifest)?;
        let mut buf = vec![0u8; READ_CHUNK];
        for (i, shard) in manifest.shards.iter().enumerate() {
            let path = dir.join(&shard.file);
            let shown = path.display().to_string();
            let mut f = File::open(&path).map_err(|e| Error::io(shown.clone(), e))?;
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io(shown, e)),
                };
                for t in reader.push(i, buf.get(..n).unwrap_or_default())? {
                    on_tensor(t)?;
                }
            }
            reader.finish_shard(i)?;
        }
        reader.finish()
    }

    /// Read and verify a whole package: the manifest, the tokenizer's bytes and every tensor,
    /// in manifest order.
    pub fn read_package_dir(dir: &Path) -> Result<(Manifest, Vec<u8>, Vec<LoadedTensor>)> {
        let (manifest, tokenizer) = open_package_dir(dir)?;
        let mut tensors = Vec::with_capacity(manifest.tensors.len());
        stream_package_dir(dir, &manifest, |t| {
            tensors.push(t);
            Ok(())
        })?;
        let order: HashMap<&str, usize> = manifest
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        tensors.sort_by_key(|t| order.get(t.name.as_str()).copied().unwrap_or(usize::MAX));
        Ok((manifest, tokenizer, tensors))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use dir::{is_package_dir, open_package_dir, read_package_dir, stream_package_dir};
