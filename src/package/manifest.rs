//! `manifest.json`: what a package holds and where each tensor's bytes lie.
//!
//! A manifest comes from outside (a download, a user's folder), so [`Manifest::validate`] checks
//! every size, offset and count with checked arithmetic *before* anything is allocated: a
//! manifest claiming a 100 GB tensor is refused here, not by the allocator.
//!
//! Where a tensor's bytes lie is `shard`, `offset` and `length`. In a version 1 manifest that
//! range lies inside the one shard. Version 2 adds one rule: a tensor larger than the room
//! left in its shard *runs on* into the following shards, filling each to its end and
//! continuing at offset 0 of the next, until `length` bytes are placed (see [`super::layout`]).
//! Nothing else changes, so a version 1 manifest is also a valid version 2 one; the writer
//! still writes version 1 whenever no tensor spans, so packages without spanning stay readable
//! by older builds, and a spanning one is refused by them as a newer version rather than as a
//! tensor "beyond the end of its shard".

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quant::{Method, QuantSpec};

/// The `format` field every package manifest carries.
pub const FORMAT: &str = "relvqa-package";
/// Manifest version in which every tensor lies inside one shard.
pub const VERSION_SINGLE_SHARD: u32 = 1;
/// Manifest version in which a tensor may run on across consecutive shards; the newest this
/// build reads (it reads [`VERSION_SINGLE_SHARD`] too).
pub const VERSION: u32 = 2;
/// File name of the manifest inside a package directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Largest shard. 64 MiB keeps a shard under browser fetch/cache limits (one Cache API entry,
/// one `Range`-resumable request, one fetch's buffered chunks).
pub const MAX_SHARD_BYTES: usize = 64 << 20;
/// Largest tensor, in any number of shards. The reader allocates a tensor whole before its
/// last byte arrives, and wasm32 has 4 GiB of linear memory in all, so half of it is the most
/// one tensor may claim; a real Qwen2-VL-2B embedding (151936 x 1536 f32, 934 MB) fits.
pub const MAX_TENSOR_BYTES: u64 = 2 << 30;
/// Largest `manifest.json` accepted; far above any real model's tensor list.
pub const MAX_MANIFEST_BYTES: usize = 32 << 20;
/// Caps on counts, so a hostile manifest cannot make validation itself expensive.
pub const MAX_TENSORS: usize = 1 << 20;
pub const MAX_SHARDS: usize = 1 << 14;
pub const MAX_RANK: usize = 8;
/// Tensors start at multiples of this within a shard, so f32/u32 views need no copy.
pub const TENSOR_ALIGN: u64 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The architecture's Hugging Face `config.json`, verbatim.
    pub config: serde_json::Value,
    pub tokenizer: FileEntry,
    pub shards: Vec<ShardEntry>,
    pub tensors: Vec<TensorEntry>,
    /// Further files that belong to this model, with checksums: the Selector and the MaxProb
    /// calibration, so a browser can fetch and verify them like the weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
}

/// A file beside the manifest with its checksum (the tokenizer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub encoding: Encoding,
    /// Index into [`Manifest::shards`] of the shard where the tensor starts.
    pub shard: usize,
    /// Where it starts in that shard (a multiple of [`TENSOR_ALIGN`]).
    pub offset: u64,
    /// Its total bytes; in a version 2 manifest they may run on into the following shards.
    pub length: u64,
    /// Hex sha256 of this tensor's bytes, so a corrupt byte is blamed on the tensor it hit.
    pub sha256: String,
}

/// How a tensor's bytes encode its values: `{"dtype": "f16"}` or `{"quant": {...}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Dtype(FloatDtype),
    Quant(QuantEncoding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatDtype {
    F16,
    F32,
}

/// A packed tensor's spec. `axis` is the grouped dimension; only 1 (K of `[out, in]`) exists,
/// but it is written down so a future layout cannot be misread as this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantEncoding {
    pub method: Method,
    pub bits: u32,
    pub group: usize,
    pub axis: u32,
}

impl QuantEncoding {
    pub fn spec(&self) -> QuantSpec {
        QuantSpec {
            bits: self.bits,
            group: self.group,
        }
    }
}

/// Byte sizes of the three arrays of a packed `[rows, cols]` tensor, in payload order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedSizes {
    pub words: u64,
    pub scales: u64,
    pub zeros: u64,
}

impl PackedSizes {
    pub fn total(&self) -> Option<u64> {
        self.words.checked_add(self.scales)?.checked_add(self.zeros)
    }
}

fn package_err(msg: String) -> Error {
    Error::Package(msg)
}

fn element_count(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

impl Encoding {
    /// Check this encoding can describe a tensor of `shape` (rank, bits, group, axis,
    /// divisibility). Empty tensors are refused: every tensor has bytes, so the stream reader
    /// always makes progress and a zero-length entry cannot hide in an overlap check.
    pub fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        if shape.len() > MAX_RANK || shape.contains(&0) {
            return Err(package_err(format!(
                "tensor `{name}`: shape {shape:?} must have 0 to {MAX_RANK} dimensions, \
                 none of them 0"
            )));
        }
        match self {
            Encoding::Dtype(_) => Ok(()),
            Encoding::Quant(q) => {
                let what = format!("tensor `{name}`");
                q.spec()
                    .validate()
                    .map_err(|e| package_err(format!("{what}: {e}")))?;
                if q.axis != 1 {
                    return Err(package_err(format!(
                        "{what}: quantization axis {} is not supported; packed tensors group \
                         along axis 1 (K of [out, in])",
                        q.axis
                    )));
                }
                let [_, k] = shape else {
                    return Err(package_err(format!(
                        "{what}: packed tensors are 2-D [out, in], but the shape is {shape:?}"
                    )));
                };
                q.spec()
                    .check_k(&what, *k)
                    .map_err(|e| package_err(e.to_string()))
            }
        }
    }

    /// Sizes of a packed tensor's arrays, or `None` on overflow or a non-2-D shape.
    pub fn packed_sizes(q: &QuantEncoding, shape: &[usize]) -> Option<PackedSizes> {
        let [rows, cols] = shape else { return None };
        let (rows, cols) = (u64::try_from(*rows).ok()?, u64::try_from(*cols).ok()?);
        let group = u64::try_from(q.group).ok()?;
        let words = rows
            .checked_mul(cols / 32)?
            .checked_mul(u64::from(q.bits))?
            .checked_mul(4)?;
        let groups = rows.checked_mul(cols.checked_div(group)?)?;
        let half = groups.checked_mul(2)?;
        Some(PackedSizes {
            words,
            scales: half,
            zeros: half,
        })
    }

    /// Bytes a tensor of `shape` takes in this encoding, or `None` if that overflows `u64`.
    pub fn byte_length(&self, shape: &[usize]) -> Option<u64> {
        match self {
            Encoding::Dtype(FloatDtype::F16) => element_count(shape)?.checked_mul(2),
            Encoding::Dtype(FloatDtype::F32) => element_count(shape)?.checked_mul(4),
            Encoding::Quant(q) => Self::packed_sizes(q, shape)?.total(),
        }
    }
}

/// Decode a 64-digit hex sha256, saying whose it is when it is malformed.
pub fn parse_sha256(what: &str, hex_digest: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).map_err(|_| {
        package_err(format!(
            "{what}: sha256 {hex_digest:?} is not 64 hexadecimal digits; the manifest is corrupt"
        ))
    })?;
    Ok(out)
}

/// File names come from the manifest and are joined to a directory or URL, so only plain names
/// are accepted: no separators, no `..`, nothing that could point outside the package.
fn check_file_name(what: &str, name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c == ':' || c.is_control());
    if plain {
        Ok(())
    } else {
        Err(package_err(format!(
            "{what}: file name {name:?} is not a plain file name inside the package directory"
        )))
    }
}

impl Manifest {
    /// Parse and validate `manifest.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(package_err(format!(
                "{MANIFEST_FILE} is {} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit; \
                 it is not a relvqa package manifest",
                bytes.len()
            )));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            package_err(format!(
                "{MANIFEST_FILE} is not a valid package manifest: {e}"
            ))
        })?;
        m.validate()?;
        Ok(m)
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| package_err(format!("cannot serialise {MANIFEST_FILE}: {e}")))
    }

    /// Total bytes of all shards, what a progress bar counts towards.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// Check everything that can be checked without the shards' bytes.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(package_err(format!(
                "format is {:?}, not {FORMAT:?}; this is not a relvqa package",
                self.format
            )));
        }
        if !(VERSION_SINGLE_SHARD..=VERSION).contains(&self.version) {
            return Err(package_err(format!(
                "manifest version {} is not supported (this relvqa reads versions \
                 {VERSION_SINGLE_SHARD} to {VERSION}); re-export the package with this relvqa \
                 or update relvqa",
                self.version
            )));
        }
        if !self.config.is_object() {
            return Err(package_err(
                "`config` must be the architecture's config.json object".into(),
            ));
        }
        check_file_name("tokenizer", &self.tokenizer.file)?;
        parse_sha256("tokenizer", &self.tokenizer.sha256)?;
        self.validate_shards()?;
        self.validate_files()?;
        self.validate_tensors()
    }

    fn validate_files(&self) -> Result<()> {
        let mut seen: HashSet<&str> = self.shards.iter().map(|s| s.file.as_str()).collect();
        seen.insert(self.tokenizer.file.as_str());
        seen.insert(MANIFEST_FILE);
        for f in &self.files {
            let what = format!("file `{}`", f.file);
            check_file_name(&what, &f.file)?;
            parse_sha256(&what, &f.sha256)?;
            if !seen.insert(f.file.as_str()) {
                return Err(package_err(format!(
                    "{what}: file name is used twice in the manifest"
                )));
            }
        }
        Ok(())
    }

    /// Check the bytes of the tokenizer or of a listed extra file against this manifest's
    /// sha256 (the browser fetches them separately from the shards).
    pub fn verify_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        use sha2::{Digest, Sha256};
        let entry = if name == self.tokenizer.file {
            &self.tokenizer
        } else {
            self.file(name).ok_or_else(|| {
                package_err(format!("file `{name}` is not listed in {MANIFEST_FILE}"))
            })?
        };
        let got = hex::encode(Sha256::digest(bytes));
        if got != entry.sha256 {
            return Err(package_err(format!(
                "file `{name}`: sha256 is {got}, the manifest says {}; the file is corrupt or \
                 from another export — re-download the package",
                entry.sha256
            )));
        }
        Ok(())
    }

    /// The checksum entry of an extra file, if the manifest lists it.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.file == name)
    }

    fn validate_shards(&self) -> Result<()> {
        if self.shards.len() > MAX_SHARDS {
            return Err(package_err(format!(
                "{} shards is more than the {MAX_SHARDS} allowed",
                self.shards.len()
            )));
        }
        let mut files = HashSet::new();
        for (i, s) in self.shards.iter().enumerate() {
            let what = format!("shard {i} (`{}`)", s.file);
            check_file_name(&what, &s.file)?;
            if s.file == self.tokenizer.file || !files.insert(s.file.as_str()) {
                return Err(package_err(format!(
                    "{what}: file name is used twice in the manifest"
                )));
            }
            if s.bytes > MAX_SHARD_BYTES as u64 {
                return Err(package_err(format!(
                    "{what}: declares {} bytes, above the {MAX_SHARD_BYTES}-byte shard limit",
                    s.bytes
                )));
            }
            parse_sha256(&what, &s.sha256)?;
        }
        Ok(())
    }

    fn validate_tensors(&self) -> Result<()> {
        if self.tensors.len() > MAX_TENSORS {
            return Err(package_err(format!(
                "{} tensors is more than the {MAX_TENSORS} allowed",
                self.tensors.len()
            )));
        }
        let mut names = HashSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(package_err(format!(
                    "tensor `{}` appears twice in the manifest",
                    t.name
                )));
            }
            self.validate_tensor(t)?;
        }
        self.validate_layout()
    }

    /// Check one tensor on its own: name, shape, length, checksum, start. Where its bytes run
    /// is [`Self::validate_layout`]'s, since that needs every tensor at once.
    fn validate_tensor(&self, t: &TensorEntry) -> Result<()> {
        let what = format!("tensor `{}`", t.name);
        if t.name.is_empty() || t.name.len() > 1024 {
            return Err(package_err(format!(
                "{what}: a tensor name must be 1 to 1024 bytes"
            )));
        }
        if t.shard >= self.shards.len() {
            return Err(package_err(format!(
                "{what}: shard index {} is out of range (the manifest lists {} shards)",
                t.shard,
                self.shards.len()
            )));
        }
        t.encoding.check_shape(&t.name, &t.shape)?;
        let expected = t.encoding.byte_length(&t.shape).ok_or_else(|| {
            package_err(format!(
                "{what}: shape {:?} is too large to address; refusing before allocating",
                t.shape
            ))
        })?;
        if expected > MAX_TENSOR_BYTES {
            return Err(package_err(format!(
                "{what}: shape {:?} needs {expected} bytes, above the {MAX_TENSOR_BYTES}-byte \
                 tensor limit (half of wasm32's 4 GiB memory); refusing before allocating",
                t.shape
            )));
        }
        if t.length != expected {
            return Err(package_err(format!(
                "{what}: length is {} bytes but shape {:?} in encoding {:?} needs {expected}",
                t.length, t.shape, t.encoding
            )));
        }
        parse_sha256(&what, &t.sha256)?;
        if !t.offset.is_multiple_of(TENSOR_ALIGN) {
            return Err(package_err(format!(
                "{what}: offset {} is not a multiple of {TENSOR_ALIGN}",
                t.offset
            )));
        }
        Ok(())
    }
}
