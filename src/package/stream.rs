//! Reading shards as byte streams, the way a web page receives them from `fetch`.
//!
//! A browser tab cannot afford a 64 MiB shard plus the tensors decoded from it, so the reader
//! holds only the tensors currently being assembled, decodes and hashes bytes as they arrive,
//! and hands each tensor over as soon as its last byte is in and its sha256 matches. Chunk
//! boundaries are arbitrary: a tensor may arrive in a thousand pieces or share a chunk with
//! ten others. A tensor that runs on across shards (manifest version 2, [`super::layout`])
//! stays open from its first part to its last, so its sha256 covers all of it; its shards must
//! arrive in order, which the page and `stream_package_dir` do anyway. Shards that no tensor
//! spans may come in any order.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::codec::LoadedTensor;
use super::decoder::TensorDecoder;
use super::layout::TensorPart;
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

/// Assembles and verifies tensors from shard bytes pushed in any chunking.
pub struct StreamReader {
    shards: Vec<ShardStream>,
    /// Every tensor of the manifest, by manifest index.
    tensors: Vec<Planned>,
    /// Tensors with some but not all bytes in, by manifest index: the one each shard is in the
    /// middle of, and a spanning tensor waiting for its next shard.
    open: HashMap<usize, Assembly>,
    progress: Progress,
}

struct Planned {
    entry: TensorEntry,
    sha256: [u8; 32],
    /// The shards its parts lie in, first and last (equal unless it spans).
    first_shard: usize,
    last_shard: usize,
}

impl Planned {
    fn spans(&self) -> bool {
        self.first_shard != self.last_shard
    }
}

/// A tensor being received: its values so far and the hash of its bytes so far.
struct Assembly {
    decoder: TensorDecoder,
    hasher: Sha256,
}

/// One part of a tensor, as a shard's plan lists it.
#[derive(Clone, Copy)]
struct Piece {
    tensor: usize,
    part: TensorPart,
    /// Whether the tensor's last byte is this part's last byte.
    last: bool,
}

struct ShardStream {
    index: usize,
    file: String,
    bytes: u64,
    sha256: [u8; 32],
    hasher: Sha256,
    /// Bytes of this shard received so far.
    pos: u64,
    /// This shard's tensor parts by offset; `next` is the one being received.
    plan: Vec<Piece>,
    next: usize,
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

/// What the reader shares between shards: the tensor list and the open assemblies.
struct Shared<'a> {
    tensors: &'a [Planned],
    open: &'a mut HashMap<usize, Assembly>,
}

fn shard_at(shards: &mut [ShardStream], shard: usize) -> Result<&mut ShardStream> {
    let n = shards.len();
    shards.get_mut(shard).ok_or_else(|| {
        Error::Package(format!(
            "shard index {shard} is out of range (the manifest lists {n} shards)"
        ))
    })
}

fn planned(tensors: &[Planned], i: usize) -> Result<&Planned> {
    tensors
        .get(i)
        .ok_or_else(|| Error::Package(format!("no tensor with index {i} in the manifest")))
}

impl ShardStream {
    fn what(&self) -> String {
        format!("shard {} (`{}`)", self.index, self.file)
    }

    fn push(&mut self, chunk: &[u8], sh: Shared) -> Result<Vec<LoadedTensor>> {
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
        let res = self.consume(chunk, sh);
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    fn consume(&mut self, mut data: &[u8], sh: Shared) -> Result<Vec<LoadedTensor>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let Some(&piece) = self.plan.get(self.next) else {
                // Trailing bytes after the last tensor: covered by the shard's sha256 only.
                self.pos += data.len() as u64;
                break;
            };
            let p = piece.part;
            if self.pos < p.offset {
                // Alignment padding between tensors.
                self.pos += take_front(&mut data, p.offset - self.pos).len() as u64;
                continue;
            }
            let t = planned(sh.tensors, piece.tensor)?;
            let asm = match sh.open.entry(piece.tensor) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) if p.at == 0 => e.insert(Assembly {
                    decoder: TensorDecoder::new(&t.entry)?,
                    hasher: Sha256::new(),
                }),
                Entry::Vacant(_) => return Err(self.out_of_order(t, p, 0)),
            };
            // The bytes before this point of the tensor must all be in: they came from this
            // shard or, for a part that continues a run, from the shards before it.
            let have = asm.decoder.received();
            if have != p.at + (self.pos - p.offset) {
                return Err(self.out_of_order(t, p, have));
            }
            let head = take_front(&mut data, p.end() - self.pos);
            asm.hasher.update(head);
            asm.decoder.push(head)?;
            self.pos += head.len() as u64;
            if self.pos == p.end() {
                self.next += 1;
                if piece.last {
                    if let Some(done) = sh.open.remove(&piece.tensor) {
                        out.push(self.complete(t, done)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn out_of_order(&self, t: &Planned, p: TensorPart, have: u64) -> Error {
        Error::Package(format!(
            "{}: holds bytes {}.. of tensor `{}`, which runs on from shard {}, but only {have} \
             of the bytes before them have arrived; push (and finish) shard {} completely \
             first: the shards of a tensor that spans them must arrive in order",
            self.what(),
            p.at,
            t.entry.name,
            t.first_shard,
            self.index.saturating_sub(1)
        ))
    }

    fn complete(&self, t: &Planned, done: Assembly) -> Result<LoadedTensor> {
        let digest = done.hasher.finalize();
        if digest.as_slice() != t.sha256 {
            let whose = if t.spans() {
                format!(
                    "tensor `{}` (which spans shards {} to {}, ending in {})",
                    t.entry.name,
                    t.first_shard,
                    t.last_shard,
                    self.what()
                )
            } else {
                format!("tensor `{}` in {}", t.entry.name, self.what())
            };
            let fix = if t.spans() {
                "one of its shards is corrupt — re-download them"
            } else {
                "the shard is corrupt — re-download it"
            };
            return Err(Error::Package(format!(
                "{whose}: sha256 is {}, the manifest says {}; {fix}",
                hex::encode(digest),
                hex::encode(t.sha256)
            )));
        }
        done.decoder.finish()
    }

    /// The tensors whose bytes this shard holds, for a checksum message (a few names).
    fn holds(&self, tensors: &[Planned]) -> String {
        const SHOWN: usize = 3;
        let names: Vec<String> = self
            .plan
            .iter()
            .take(SHOWN)
            .filter_map(|p| tensors.get(p.tensor))
            .map(|t| format!("`{}`", t.entry.name))
            .collect();
        let more = self.plan.len().saturating_sub(SHOWN);
        match (names.is_empty(), more) {
            (true, _) => String::new(),
            (false, 0) => format!(" (it holds bytes of tensor {})", names.join(", ")),
            (false, n) => format!(
                " (it holds bytes of tensors {} and {n} more)",
                names.join(", ")
            ),
        }
    }

    fn finish(&mut self, tensors: &[Planned]) -> Result<()> {
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
            let cut = self
                .plan
                .get(self.next)
                .and_then(|piece| Some((piece.part, tensors.get(piece.tensor)?)));
            return Err(Error::Package(match cut {
                Some((p, t)) => {
                    let missing = p.end() - self.pos.max(p.offset);
                    let short = if t.spans() {
                        format!(
                            "tensor `{}` (which spans shards {} to {}) is missing {missing} of \
                             the {} bytes it has in this shard",
                            t.entry.name, t.first_shard, t.last_shard, p.bytes
                        )
                    } else {
                        format!(
                            "tensor `{}` is missing {missing} of its {} bytes",
                            t.entry.name, t.entry.length
                        )
                    };
                    format!(
                        "{head}: {short} ({} of the shard's {} tensors incomplete); the \
                         download was cut short — retry it",
                        self.plan.len() - self.next,
                        self.plan.len()
                    )
                }
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
                "{what}: sha256 is {}, the manifest says {}{}; the shard is corrupt \
                 or from another export — re-download it",
                hex::encode(digest),
                hex::encode(self.sha256),
                self.holds(tensors)
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
                    finished: false,
                    failed: false,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut tensors = Vec::with_capacity(manifest.tensors.len());
        for (i, t) in manifest.tensors.iter().enumerate() {
            let what = format!("tensor `{}`", t.name);
            // `validate` bounded the parts: all of them together are at most one per tensor
            // plus one per shard.
            let parts = manifest.tensor_parts(t)?;
            let last_shard = parts.last().map_or(t.shard, |p| p.shard);
            for (k, &part) in parts.iter().enumerate() {
                let shard = shards.get_mut(part.shard).ok_or_else(|| {
                    Error::Package(format!(
                        "{what}: shard index {} is out of range",
                        part.shard
                    ))
                })?;
                shard.plan.push(Piece {
                    tensor: i,
                    part,
                    last: k + 1 == parts.len(),
                });
            }
            tensors.push(Planned {
                entry: t.clone(),
                sha256: parse_sha256(&what, &t.sha256)?,
                first_shard: t.shard,
                last_shard,
            });
        }
        for s in &mut shards {
            s.plan.sort_by_key(|p| p.part.offset);
        }
        Ok(Self {
            shards,
            tensors,
            open: HashMap::new(),
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
        let Self {
            shards,
            tensors,
            open,
            progress,
        } = self;
        let out = shard_at(shards, shard)?.push(chunk, Shared { tensors, open })?;
        progress.bytes_received += chunk.len() as u64;
        progress.tensors_loaded += out.len();
        Ok(out)
    }

    /// Declare shard `shard` complete: errors if it ended early (naming the tensor cut short)
    /// or if the whole shard's sha256 differs from the manifest.
    pub fn finish_shard(&mut self, shard: usize) -> Result<()> {
        shard_at(&mut self.shards, shard)?.finish(&self.tensors)
    }

    /// Check every shard was received and finished, so no tensor is silently missing.
    pub fn finish(&self) -> Result<()> {
        if let Some(s) = self.shards.iter().find(|s| !s.finished) {
            return Err(Error::Package(format!(
                "{} was not received completely ({} of {} bytes); the package is incomplete",
                s.what(),
                s.pos,
                s.bytes
            )));
        }
        // Every shard finished means every part arrived; this only guards that reasoning.
        match self.open.keys().next().and_then(|&i| self.tensors.get(i)) {
            Some(t) => Err(Error::Package(format!(
                "tensor `{}` was not received completely; the package is incomplete",
                t.entry.name
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
