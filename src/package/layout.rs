//! Where each tensor's bytes lie across the shards, and the check that no two tensors share a
//! byte.
//!
//! A tensor is `length` bytes from `offset` in shard `shard`. When that passes the end of the
//! shard (allowed from manifest version 2), the tensor *runs on*: it fills its shard to the
//! end, then each following shard from offset 0, until `length` bytes are placed. So a
//! spanning tensor's parts are fully determined by its start, its length and the shards'
//! sizes; the manifest does not list them. The alternative, an explicit list of
//! `{shard, offset, bytes}` parts per tensor, would say the same thing twice and every way
//! the two could disagree (a gap between parts, a part outside its shard, parts in the wrong
//! order, parts summing to another length) would need its own check; here they cannot be
//! written at all. What remains to check is that the run ends inside the last shard, enters
//! no empty shard, and overlaps no other tensor.
//!
//! Shards stay at most [`super::MAX_SHARD_BYTES`] (one Cache API entry, one resumable fetch);
//! a tensor is bounded separately by [`super::MAX_TENSOR_BYTES`].

use crate::error::{Error, Result};

use super::manifest::{Manifest, TensorEntry, VERSION, VERSION_SINGLE_SHARD};

/// One contiguous piece of a tensor inside one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorPart {
    /// Index into [`Manifest::shards`].
    pub shard: usize,
    /// Where the piece starts in its shard.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// Where it starts within the tensor: the bytes of all earlier parts.
    pub at: u64,
}

impl TensorPart {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.bytes)
    }
}

fn package_err(msg: String) -> Error {
    Error::Package(msg)
}

impl Manifest {
    /// The parts of tensor `t` in tensor order: one for a tensor inside its shard, one per
    /// shard it runs through otherwise.
    pub fn tensor_parts(&self, t: &TensorEntry) -> Result<Vec<TensorPart>> {
        let mut parts = Vec::new();
        self.walk_parts(t, |p| {
            parts.push(p);
            Ok(())
        })?;
        Ok(parts)
    }

    /// Call `on_part` for each part of `t` in tensor order, stopping at the first error (its
    /// own or `on_part`'s), so a hostile run across thousands of shards costs one step per
    /// shard only until it first collides with something.
    fn walk_parts(
        &self,
        t: &TensorEntry,
        mut on_part: impl FnMut(TensorPart) -> Result<()>,
    ) -> Result<()> {
        let what = format!("tensor `{}`", t.name);
        let (mut shard, mut offset, mut at) = (t.shard, t.offset, 0u64);
        loop {
            let left = t.length.saturating_sub(at);
            let Some(s) = self.shards.get(shard) else {
                return Err(package_err(if shard == t.shard {
                    format!(
                        "{what}: shard index {shard} is out of range (the manifest lists {} \
                         shards)",
                        self.shards.len()
                    )
                } else {
                    format!(
                        "{what}: offset {} + length {} runs past the last shard: {left} of its \
                         bytes have no shard; the manifest is corrupt",
                        t.offset, t.length
                    )
                }));
            };
            let room = s.bytes.saturating_sub(offset);
            let beyond = || {
                format!(
                    "{what}: offset {} + length {} lies beyond the end of shard {} (`{}`, {} \
                     bytes)",
                    t.offset, t.length, shard, s.file, s.bytes
                )
            };
            if room == 0 && at == 0 {
                return Err(package_err(beyond()));
            }
            if room == 0 {
                return Err(package_err(format!(
                    "{what}: runs on into shard {shard} (`{}`), which is empty; the manifest is \
                     corrupt",
                    s.file
                )));
            }
            if room < left && self.version == VERSION_SINGLE_SHARD {
                // Version 1 has no spanning, so an old manifest keeps its old meaning.
                return Err(package_err(format!(
                    "{}; only a version {VERSION} manifest lets a tensor run on into the next \
                     shard",
                    beyond()
                )));
            }
            let bytes = room.min(left);
            on_part(TensorPart {
                shard,
                offset,
                bytes,
                at,
            })?;
            at += bytes;
            if at >= t.length {
                return Ok(());
            }
            shard += 1;
            offset = 0;
        }
    }

    /// Every tensor's parts inside their shards and no byte claimed twice.
    pub(super) fn validate_layout(&self) -> Result<()> {
        // A run continues at offset 0 of a shard; two runs continuing into one shard overlap
        // at once. Recording them stops a hostile manifest early (see `walk_parts`).
        let mut continued: Vec<Option<&str>> = vec![None; self.shards.len()];
        // Per shard: (offset, end, name), to find overlaps after sorting.
        let mut ranges: Vec<Vec<(u64, u64, &str)>> = vec![Vec::new(); self.shards.len()];
        for t in &self.tensors {
            let name = t.name.as_str();
            self.walk_parts(t, |p| {
                let taken = continued
                    .get_mut(p.shard)
                    .ok_or_else(|| package_err(format!("tensor `{name}`: no shard {}", p.shard)))?;
                if p.at > 0 {
                    if let Some(prev) = taken.replace(name) {
                        return Err(package_err(format!(
                            "tensor `{name}` runs on into shard {} where tensor `{prev}` also \
                             runs on; they overlap; the manifest is corrupt",
                            p.shard
                        )));
                    }
                }
                if let Some(rs) = ranges.get_mut(p.shard) {
                    rs.push((p.offset, p.end(), name));
                }
                Ok(())
            })?;
        }
        for (shard, mut rs) in ranges.into_iter().enumerate() {
            rs.sort_unstable();
            for pair in rs.windows(2) {
                if let [(_, prev_end, prev), (start, _, name)] = pair {
                    if start < prev_end {
                        return Err(package_err(format!(
                            "tensor `{name}` at offset {start} overlaps tensor `{prev}` \
                             (which ends at {prev_end}) in shard {shard}; the manifest is corrupt"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::manifest::{Encoding, FloatDtype, ShardEntry, VERSION};

    fn manifest(shard_bytes: &[u64], tensor: (usize, u64, usize)) -> Manifest {
        let digest = "0".repeat(64);
        let (shard, offset, elems) = tensor;
        Manifest {
            format: super::super::manifest::FORMAT.into(),
            version: VERSION,
            config: serde_json::json!({}),
            tokenizer: super::super::FileEntry {
                file: "tokenizer.json".into(),
                sha256: digest.clone(),
            },
            shards: shard_bytes
                .iter()
                .enumerate()
                .map(|(i, &bytes)| ShardEntry {
                    file: format!("s{i}"),
                    bytes,
                    sha256: digest.clone(),
                })
                .collect(),
            tensors: vec![TensorEntry {
                name: "t".into(),
                shape: vec![elems],
                encoding: Encoding::Dtype(FloatDtype::F16),
                shard,
                offset,
                length: elems as u64 * 2,
                sha256: digest,
            }],
            files: Vec::new(),
        }
    }

    fn part(shard: usize, offset: u64, bytes: u64, at: u64) -> TensorPart {
        TensorPart {
            shard,
            offset,
            bytes,
            at,
        }
    }

    #[test]
    fn parts_fill_each_shard_then_continue_at_offset_0() {
        let m = manifest(&[10, 6, 9, 40], (0, 4, 10));
        m.validate().unwrap();
        let parts = m.tensor_parts(&m.tensors[0]).unwrap();
        assert_eq!(
            parts,
            [part(0, 4, 6, 0), part(1, 0, 6, 6), part(2, 0, 8, 12)]
        );
        // Inside one shard: one part, as in version 1.
        let m = manifest(&[40], (0, 8, 10));
        let parts = m.tensor_parts(&m.tensors[0]).unwrap();
        assert_eq!(parts, [part(0, 8, 20, 0)]);
    }

    #[test]
    fn a_run_must_start_inside_its_shard_and_end_inside_the_last() {
        let m = manifest(&[8, 8], (0, 8, 4));
        assert!(m.validate().is_err());
        let m = manifest(&[8, 8], (0, 4, 8));
        let msg = m
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("runs past the last shard: 4"), "{msg}");
        let mut m = manifest(&[8, 8], (0, 4, 4));
        m.validate().unwrap();
        m.version = VERSION_SINGLE_SHARD;
        assert!(m.validate().is_err());
    }
}
