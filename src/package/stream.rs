//! Reading shards as byte streams, the way a web page receives them from `fetch`.
//!
//! A browser tab cannot afford a 64 MiB shard plus the tensors decoded from it, so the reader
//! holds only the bytes of the tensor currently being assembled (per shard), hashes as bytes
//! arrive, and hands each tensor over as soon as its last byte is in and its sha256 matches.
//! Chunk boundaries are arbitrary: a tensor may arrive in a thousand pieces or share a chunk
//! with ten others.

use sha2::{Digest, Sha256};

use super::codec::{decode_tensor, LoadedTensor};
use super::manifest::{parse_sha256, Manifest, TensorEntry};
use crate::error::{Error, Result};

/// Bytes and tensors received so far, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub bytes_received: u64,
    pub bytes_total: u64,
    pub tensors_loaded: usize,
    pub tensors_total: usize,
}

/// Assembles and verifies tensors from shard bytes pushed in any chunking, shards in any order.
pub struct StreamReader {
    shards: Vec<ShardStream>,
    progress: Progress,
}

struct Planned {
    entry: TensorEntry,
    sha256: [u8; 32],
    end: u64,
}

struct ShardStream {
    index: usize,
    file: String,
    bytes: u64,
    sha256: [u8; 32],
    hasher: Sha256,
    /// Bytes of this shard received so far.
    pos: u64,
    /// This shard's tensors by offset; `next` is the one being assembled.
    plan: Vec<Planned>,
    next: usize,
    buf: Vec<u8>,
    tensor_hasher: Sha256,
    finished: bool,
    /// Set by an error, after which this shard's state is meaningless.
    failed: bool,
}

/// Split up to `n` bytes off the front of `data`.
fn take_front<'a>(data: &mut &'a [u8], n: u64) -> &'a [u8] {
    let n = usize::try_from(n).map_or(data.len(), |n| n.min(data.len()));
    let (head, tail) = data.split_at(n);
    *data = tail;
    head
}

impl ShardStream {
    fn what(&self) -> String {
        format!("shard {} (`{}`)", self.index, self.file)
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Vec<LoadedTensor>> {
        if self.finished || self.failed {
            let why = if self.failed {
                "an earlier error stopped it; restart its download"
            } else {
                "it was already finished"
            };
            return Err(Error::Package(format!(
                "{}: cannot accept more bytes: {why}",
                self.what()
            )));
        }
        let end = self.pos.saturating_add(chunk.len() as u64);
        if end > self.bytes {
            self.failed = true;
            return Err(Error::Package(format!(
                "{}: received {end} bytes but the manifest declares {}; \
                 the file is not the one this manifest describes — re-download the package",
                self.what(),
                self.bytes
            )));
        }
        self.hasher.update(chunk);
        let res = self.consume(chunk);
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    fn consume(&mut self, mut data: &[u8]) -> Result<Vec<LoadedTensor>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let Some(t) = self.plan.get(self.next) else {
                // Trailing bytes after the last tensor: covered by the shard's sha256 only.
                self.pos += data.len() as u64;
                break;
            };
            if self.pos < t.entry.offset {
                // Alignment padding between tensors.
                self.pos += take_front(&mut data, t.entry.offset - self.pos).len() as u64;
                continue;
            }
            let (end, length) = (t.end, t.entry.length);
            let head = take_front(&mut data, end - self.pos);
            if self.buf.capacity() == 0 {
                // `length` passed the shard-size cap in `Manifest::validate`.
                self.buf.reserve_exact(usize::try_from(length).unwrap_or(0));
            }
            self.buf.extend_from_slice(head);
            self.tensor_hasher.update(head);
            self.pos += head.len() as u64;
            if self.pos == end {
                out.push(self.complete_tensor()?);
            }
        }
        Ok(out)
    }

    fn complete_tensor(&mut self) -> Result<LoadedTensor> {
        let bytes = std::mem::take(&mut self.buf);
        let digest = self.tensor_hasher.finalize_reset();
        let what = self.what();
        let t = self
            .plan
            .get(self.next)
            .ok_or_else(|| Error::Package(format!("{what}: no tensor is being assembled")))?;
        if digest.as_slice() != t.sha256 {
            return Err(Error::Package(format!(
                "tensor `{}` in {what}: sha256 is {}, the manifest says {}; \
                 the shard is corrupt — re-download it",
                t.entry.name,
                hex::encode(digest),
                hex::encode(t.sha256)
            )));
        }
        let loaded = decode_tensor(&t.entry, &bytes)?;
        self.next += 1;
        Ok(loaded)
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let what = self.what();
        if self.failed {
            return Err(Error::Package(format!(
                "{what}: an earlier error stopped this shard; restart its download"
            )));
        }
        if self.pos < self.bytes {
            self.failed = true;
            let head = format!(
                "{what} ended after {} of its {} bytes",
                self.pos, self.bytes
            );
            return Err(Error::Package(match self.plan.get(self.next) {
                Some(t) => format!(
                    "{head}: tensor `{}` is missing {} of its {} bytes \
                     ({} of the shard's {} tensors incomplete); the download was cut short — \
                     retry it",
                    t.entry.name,
                    t.end - self.pos.max(t.entry.offset),
                    t.entry.length,
                    self.plan.len() - self.next,
                    self.plan.len()
                ),
                None => format!(
                    "{head}: {} trailing bytes are missing; the download was cut short — retry it",
                    self.bytes - self.pos
                ),
            }));
        }
        let digest = std::mem::take(&mut self.hasher).finalize();
        if digest.as_slice() != self.sha256 {
            self.failed = true;
            return Err(Error::Package(format!(
                "{what}: sha256 is {}, the manifest says {}; the shard is corrupt \
                 or from another export — re-download it",
                hex::encode(digest),
                hex::encode(self.sha256)
            )));
        }
        self.finished = true;
        self.plan = Vec::new();
        Ok(())
    }
}

impl StreamReader {
    /// Validate `manifest` and prepare to receive its shards.
    pub fn new(manifest: &Manifest) -> Result<Self> {
        manifest.validate()?;
        let mut shards = manifest
            .shards
            .iter()
            .enumerate()
            .map(|(index, s)| {
                Ok(ShardStream {
                    index,
                    file: s.file.clone(),
                    bytes: s.bytes,
                    sha256: parse_sha256(&format!("shard {index}"), &s.sha256)?,
                    hasher: Sha256::new(),
                    pos: 0,
                    plan: Vec::new(),
                    next: 0,
                    buf: Vec::new(),
                    tensor_hasher: Sha256::new(),
                    finished: false,
                    failed: false,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for t in &manifest.tensors {
            let what = format!("tensor `{}`", t.name);
            let shard = shards.get_mut(t.shard).ok_or_else(|| {
                Error::Package(format!("{what}: shard index {} is out of range", t.shard))
            })?;
            shard.plan.push(Planned {
                entry: t.clone(),
                sha256: parse_sha256(&what, &t.sha256)?,
                // Checked in `validate`; saturating keeps this line panic-free regardless.
                end: t.offset.saturating_add(t.length),
            });
        }
        for s in &mut shards {
            s.plan.sort_by_key(|p| p.entry.offset);
        }
        Ok(Self {
            shards,
            progress: Progress {
                bytes_received: 0,
                bytes_total: manifest.total_bytes(),
                tensors_loaded: 0,
                tensors_total: manifest.tensors.len(),
            },
        })
    }

    /// Feed the next bytes of shard `shard` (an index into `manifest.shards`); returns the
    /// tensors these bytes completed, each verified against its sha256.
    pub fn push(&mut self, shard: usize, chunk: &[u8]) -> Result<Vec<LoadedTensor>> {
        let n = self.shards.len();
        let s = self.shards.get_mut(shard).ok_or_else(|| {
            Error::Package(format!(
                "shard index {shard} is out of range (the manifest lists {n} shards)"
            ))
        })?;
        let out = s.push(chunk)?;
        self.progress.bytes_received += chunk.len() as u64;
        self.progress.tensors_loaded += out.len();
        Ok(out)
    }

    /// Declare shard `shard` complete: errors if it ended early (naming the tensor cut short)
    /// or if the whole shard's sha256 differs from the manifest.
    pub fn finish_shard(&mut self, shard: usize) -> Result<()> {
        let n = self.shards.len();
        self.shards
            .get_mut(shard)
            .ok_or_else(|| {
                Error::Package(format!(
                    "shard index {shard} is out of range (the manifest lists {n} shards)"
                ))
            })?
            .finish()
    }

    /// Check every shard was received and finished, so no tensor is silently missing.
    pub fn finish(&self) -> Result<()> {
        match self.shards.iter().find(|s| !s.finished) {
            Some(s) => Err(Error::Package(format!(
                "{} was not received completely ({} of {} bytes); the package is incomplete",
                s.what(),
                s.pos,
                s.bytes
            ))),
            None => Ok(()),
        }
    }

    /// Bytes of shard `shard` received so far: where a resumed download (an HTTP `Range`
    /// request) must start. `None` for an index out of range.
    pub fn shard_received(&self, shard: usize) -> Option<u64> {
        self.shards.get(shard).map(|s| s.pos)
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    pub fn bytes_received(&self) -> u64 {
        self.progress.bytes_received
    }

    pub fn bytes_total(&self) -> u64 {
        self.progress.bytes_total
    }
}
