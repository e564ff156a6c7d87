//! Writing a package directory (native only).
//!
//! Every file is written under a temporary name, synced and renamed, and `manifest.json` is
//! removed first and written last: a crash at any point leaves either the old complete package
//! or a directory without a manifest, never a manifest pointing at half-written shards.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::codec::PackageTensor;
use super::manifest::{
    FileEntry, Manifest, ShardEntry, TensorEntry, FORMAT, MANIFEST_FILE, MAX_SHARD_BYTES,
    MAX_TENSOR_BYTES, TENSOR_ALIGN, VERSION, VERSION_SINGLE_SHARD,
};
use crate::error::{Error, Result};
use crate::model::loader::TOKENIZER_FILE;

/// Name of shard `index` (0-based) on disk: `model-00001.bin`, ...
pub fn shard_file_name(index: usize) -> String {
    format!("model-{:05}.bin", index + 1)
}

fn is_shard_file_name(name: &str) -> bool {
    name.strip_prefix("model-")
        .and_then(|s| s.strip_suffix(".bin"))
        .is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Write `bytes` to `path` via a synced temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let io = |e| Error::io(tmp.display().to_string(), e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path.display().to_string(), e))
}

/// The shard being filled: written to `<name>.tmp`, renamed when closed.
struct OpenShard {
    name: String,
    path: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
    len: u64,
}

impl OpenShard {
    fn create(dir: &Path, index: usize) -> Result<Self> {
        let name = shard_file_name(index);
        let path = dir.join(&name);
        let tmp = tmp_path(&path);
        let f = File::create(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
        Ok(Self {
            name,
            path,
            out: BufWriter::new(f),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let tmp = tmp_path(&self.path);
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(tmp.display().to_string(), e))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn close(self) -> Result<ShardEntry> {
        let tmp = tmp_path(&self.path);
        let io = |e| Error::io(tmp.display().to_string(), e);
        let f = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(|e| Error::io(self.path.display().to_string(), e))?;
        Ok(ShardEntry {
            file: self.name,
            bytes: self.len,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// Check names, shapes and sizes before touching the disk, so a bad request writes nothing.
fn check_tensors(tensors: &[(String, PackageTensor)], max_shard_bytes: usize) -> Result<()> {
    if !(TENSOR_ALIGN as usize..=MAX_SHARD_BYTES).contains(&max_shard_bytes) {
        return Err(Error::Invalid(format!(
            "max_shard_bytes {max_shard_bytes} must be between {TENSOR_ALIGN} and {MAX_SHARD_BYTES}"
        )));
    }
    let mut names = HashSet::new();
    for (name, t) in tensors {
        if !names.insert(name.as_str()) {
            return Err(Error::Invalid(format!(
                "tensor `{name}` is given twice; package tensor names must be unique"
            )));
        }
        t.validate(name)?;
        let (shape, enc) = (t.shape(), t.encoding());
        enc.check_shape(name, &shape)?;
        match enc.byte_length(&shape) {
            Some(n) if n <= MAX_TENSOR_BYTES => {}
            n => {
                return Err(Error::Invalid(format!(
                    "tensor `{name}` {shape:?} takes {n:?} bytes, more than a package tensor may \
                     hold ({MAX_TENSOR_BYTES}: a reader in a wasm32 tab holds it whole); split \
                     it into several tensors"
                )))
            }
        }
    }
    Ok(())
}

/// Write a package into `dir` (created if needed) and return its manifest. Tensors are laid
/// out in the given order, each 4-byte aligned. A tensor that fits in a shard never straddles
/// two: a new shard is started whenever it would push the current one past `max_shard_bytes`.
/// A tensor larger than that runs on from the room left in the current shard through as many
/// full shards as it needs (manifest version 2, see `layout.rs`); the next tensor follows it in
/// its last shard. A package in which nothing spans is written as version 1, byte for byte
/// what earlier builds wrote.
pub fn write_package(
    dir: &Path,
    config: &serde_json::Value,
    tokenizer_json: &[u8],
    tensors: Vec<(String, PackageTensor)>,
    max_shard_bytes: usize,
) -> Result<Manifest> {
    if !config.is_object() {
        return Err(Error::Invalid(
            "the package config must be the architecture's config.json object".into(),
        ));
    }
    check_tensors(&tensors, max_shard_bytes)?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    match fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(manifest_path.display().to_string(), e))
        }
        _ => {}
    }

    write_atomic(&dir.join(TOKENIZER_FILE), tokenizer_json)?;
    let tokenizer = FileEntry {
        file: TOKENIZER_FILE.into(),
        sha256: hex::encode(Sha256::digest(tokenizer_json)),
    };

    let max = max_shard_bytes as u64;
    let mut shards = Vec::new();
    let mut entries = Vec::with_capacity(tensors.len());
    let mut open: Option<OpenShard> = None;
    let mut spans = false;
    for (name, t) in tensors {
        let (shape, encoding) = (t.shape(), t.encoding());
        let bytes = t.to_bytes(&name)?;
        drop(t);
        let length = bytes.len() as u64;
        let mut shard = match open.take() {
            Some(s) if s.len.next_multiple_of(TENSOR_ALIGN) + length <= max => s,
            // Larger than any shard: it starts in whatever room the current one has left.
            Some(s) if length > max && s.len.next_multiple_of(TENSOR_ALIGN) < max => s,
            Some(s) => {
                shards.push(s.close()?);
                OpenShard::create(dir, shards.len())?
            }
            None => OpenShard::create(dir, shards.len())?,
        };
        let offset = shard.len.next_multiple_of(TENSOR_ALIGN);
        let pad = [0u8; TENSOR_ALIGN as usize];
        let pad_len = usize::try_from(offset - shard.len).unwrap_or(0);
        shard.append(pad.get(..pad_len).unwrap_or_default())?;
        let start = shards.len();
        let mut rest = bytes.as_slice();
        loop {
            let room = usize::try_from(max.saturating_sub(shard.len)).unwrap_or(usize::MAX);
            let (head, tail) = rest.split_at(room.min(rest.len()));
            shard.append(head)?;
            rest = tail;
            if rest.is_empty() {
                break;
            }
            spans = true;
            shards.push(shard.close()?);
            shard = OpenShard::create(dir, shards.len())?;
        }
        entries.push(TensorEntry {
            name,
            shape,
            encoding,
            shard: start,
            offset,
            length,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
        open = Some(shard);
    }
    if let Some(s) = open {
        shards.push(s.close()?);
    }

    let manifest = Manifest {
        format: FORMAT.into(),
        version: if spans { VERSION } else { VERSION_SINGLE_SHARD },
        config: config.clone(),
        tokenizer,
        shards,
        tensors: entries,
        files: Vec::new(),
    };
    manifest.validate()?;
    remove_stale_shards(dir, &manifest)?;
    write_atomic(&manifest_path, &manifest.to_json()?)?;
    Ok(manifest)
}

/// Shards of an earlier, larger package in the same directory would otherwise linger unused.
fn remove_stale_shards(dir: &Path, manifest: &Manifest) -> Result<()> {
    let keep: HashSet<&str> = manifest.shards.iter().map(|s| s.file.as_str()).collect();
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_shard_file_name(name) && !keep.contains(name) {
            fs::remove_file(entry.path())
                .map_err(|e| Error::io(entry.path().display().to_string(), e))?;
        }
    }
    Ok(())
}

/// Add (or replace) an extra file in a package directory and list it, with its sha256, in the
/// manifest. The file lands before the manifest names it, so a crash between the two leaves
/// an unlisted file, never a listed file with the wrong bytes.
pub fn attach_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<Manifest> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text =
        fs::read(&manifest_path).map_err(|e| Error::io(manifest_path.display().to_string(), e))?;
    let mut manifest = Manifest::from_json(&text)?;
    let entry = FileEntry {
        file: name.into(),
        sha256: hex::encode(Sha256::digest(bytes)),
    };
    manifest.files.retain(|f| f.file != name);
    manifest.files.push(entry);
    manifest.validate()?;
    write_atomic(&dir.join(name), bytes)?;
    write_atomic(&manifest_path, &manifest.to_json()?)?;
    Ok(manifest)
}

/// Read an extra file of a package, checked against the manifest's sha256. `None` when the
/// manifest does not list it.
pub fn read_listed_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text =
        fs::read(&manifest_path).map_err(|e| Error::io(manifest_path.display().to_string(), e))?;
    let manifest = Manifest::from_json(&text)?;
    let Some(entry) = manifest.file(name) else {
        return Ok(None);
    };
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let got = hex::encode(Sha256::digest(&bytes));
    if got != entry.sha256 {
        return Err(Error::Package(format!(
            "{}: sha256 is {got}, the manifest says {}; the file is corrupt or from another \
             run — re-download the package or retrain the Selector",
            path.display(),
            entry.sha256
        )));
    }
    Ok(Some(bytes))
}
