//! Tensors larger than a shard (manifest version 2): written across consecutive shards, read
//! back bit for bit by the directory reader and by the streaming reader in any chunking and
//! across a resumed cut, and every way a shard or a manifest can break a spanning tensor
//! refused with a message naming the tensor and the shard.

use std::fs;
use std::path::Path;

use half::f16;
use relvqa::package::{
    read_package_dir, stream_package_dir, write_package, Encoding, FloatDtype, LoadedTensor,
    Manifest, PackageTensor, ShardEntry, StreamReader, TensorData, TensorEntry, TensorPart,
    MANIFEST_FILE, MAX_SHARD_BYTES, MAX_TENSOR_BYTES,
};
use relvqa::quant::{rtn, QuantSpec};
use relvqa::Result;
use serde_json::json;
use tempfile::TempDir;

const TOKENIZER: &[u8] = br#"{"version":"1.0","model":{"type":"WordLevel"}}"#;
/// Not a multiple of 4, so values are cut by shard boundaries and the decoder must carry them.
const SHARD: usize = 998;

fn weights(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
        .collect()
}

/// A small tensor, an f32 one of 5280 bytes (6 shards), a packed one of 9216 bytes whose
/// words, scales and zeros all cross shard boundaries, an f16 one that fits, and a small tail
/// that follows the last spanning tensor in its last shard.
fn tensors() -> Vec<(String, PackageTensor)> {
    let f16s = |n, seed| weights(n, seed).into_iter().map(f16::from_f32).collect();
    let packed = rtn::quantize(
        "packed",
        &weights(64 * 256, 3),
        64,
        256,
        QuantSpec::new(4, 64).unwrap(),
    )
    .unwrap();
    vec![
        (
            "norm".into(),
            PackageTensor::Float {
                shape: vec![3],
                data: f16s(3, 1),
            },
        ),
        (
            "embed".into(),
            PackageTensor::Float32 {
                shape: vec![40, 33],
                data: weights(40 * 33, 2),
            },
        ),
        ("packed".into(), PackageTensor::Packed(packed)),
        (
            "fits".into(),
            PackageTensor::Float {
                shape: vec![300],
                data: f16s(300, 4),
            },
        ),
        (
            "tail".into(),
            PackageTensor::Float {
                shape: vec![5],
                data: f16s(5, 5),
            },
        ),
    ]
}

fn expected() -> Vec<LoadedTensor> {
    tensors()
        .into_iter()
        .map(|(name, t)| LoadedTensor {
            shape: t.shape(),
            data: match t {
                PackageTensor::Float { data, .. } => TensorData::F16(data),
                PackageTensor::Float32 { data, .. } => TensorData::F32(data),
                PackageTensor::Packed(p) => TensorData::Packed(p),
            },
            name,
        })
        .collect()
}

fn write(max_shard_bytes: usize) -> (TempDir, Manifest) {
    let dir = TempDir::new().unwrap();
    let m = write_package(
        dir.path(),
        &json!({"model_type": "idefics3"}),
        TOKENIZER,
        tensors(),
        max_shard_bytes,
    )
    .unwrap();
    (dir, m)
}

fn entry<'a>(m: &'a Manifest, name: &str) -> &'a TensorEntry {
    m.tensors.iter().find(|t| t.name == name).unwrap()
}

fn parts(m: &Manifest, name: &str) -> Vec<TensorPart> {
    m.tensor_parts(entry(m, name)).unwrap()
}

fn shard_bytes(dir: &Path, m: &Manifest) -> Vec<Vec<u8>> {
    m.shards
        .iter()
        .map(|s| fs::read(dir.join(&s.file)).unwrap())
        .collect()
}

/// Every shard through one reader in chunks of `chunk` bytes, each shard finished.
fn stream(m: &Manifest, shards: &[Vec<u8>], chunk: usize) -> Result<Vec<LoadedTensor>> {
    let mut r = StreamReader::new(m)?;
    let mut out = Vec::new();
    for (i, bytes) in shards.iter().enumerate() {
        for c in bytes.chunks(chunk) {
            out.extend(r.push(i, c)?);
        }
        r.finish_shard(i)?;
    }
    r.finish()?;
    Ok(out)
}

fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "message {msg:?} should mention {w:?}");
    }
}

#[test]
fn the_writer_splits_large_tensors_and_only_those() {
    let (dir, m) = write(SHARD);
    assert_eq!(m.version, 2);
    for (i, s) in m.shards.iter().enumerate() {
        assert_eq!(s.file, format!("model-{:05}.bin", i + 1));
        assert!(s.bytes <= SHARD as u64, "{s:?}");
    }
    let embed = parts(&m, "embed");
    let packed = parts(&m, "packed");
    assert!(
        embed.len() >= 3 && packed.len() >= 3,
        "{embed:?} {packed:?}"
    );
    // A run fills each shard to its end and continues at offset 0 of the next.
    for w in packed.windows(2) {
        assert_eq!(w[0].end(), m.shards[w[0].shard].bytes);
        assert_eq!((w[1].shard, w[1].offset), (w[0].shard + 1, 0));
        assert_eq!(w[1].at, w[0].at + w[0].bytes);
    }
    assert_eq!(
        packed.iter().map(|p| p.bytes).sum::<u64>(),
        entry(&m, "packed").length
    );
    // A tensor that fits stays in one shard, and the tail follows the last run in its shard.
    assert_eq!(parts(&m, "fits").len(), 1);
    assert_eq!(parts(&m, "norm").len(), 1);
    let tail = entry(&m, "tail");
    assert_eq!(tail.shard, m.shards.len() - 1);
    // The entry is the version 1 entry: no new fields, just a length past its shard.
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
    let keys: Vec<&str> = v["tensors"][1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["encoding", "length", "name", "offset", "sha256", "shape", "shard"]
    );

    // Nothing spans with the default limit: version 1, as earlier builds wrote it.
    let (_dir, m1) = write(MAX_SHARD_BYTES);
    assert_eq!((m1.version, m1.shards.len()), (1, 1));
}

#[test]
fn spanning_tensors_round_trip_bit_for_bit() {
    let (dir, m) = write(SHARD);
    let (read_m, _, tensors) = read_package_dir(dir.path()).unwrap();
    assert_eq!(read_m, m);
    assert_eq!(tensors, expected());
    let mut order = Vec::new();
    stream_package_dir(dir.path(), &m, |t| {
        order.push(t.name);
        Ok(())
    })
    .unwrap();
    assert_eq!(order, ["norm", "embed", "packed", "fits", "tail"]);
    let shards = shard_bytes(dir.path(), &m);
    for chunk in [1, 3, 7, 13, 333, 4096, usize::MAX] {
        assert_eq!(stream(&m, &shards, chunk).unwrap(), expected(), "{chunk}");
    }
}

/// A spanning tensor is handed over once, when the last byte of its last part arrives.
#[test]
fn a_spanning_tensor_arrives_with_its_last_byte() {
    let (dir, m) = write(SHARD);
    let shards = shard_bytes(dir.path(), &m);
    let last = *parts(&m, "embed").last().unwrap();
    let mut r = StreamReader::new(&m).unwrap();
    let mut got = Vec::new();
    for (i, bytes) in shards.iter().enumerate().take(last.shard) {
        got.extend(r.push(i, bytes).unwrap());
        r.finish_shard(i).unwrap();
    }
    assert_eq!(
        got.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["norm"]
    );
    let end = last.end() as usize;
    assert!(r
        .push(last.shard, &shards[last.shard][..end - 1])
        .unwrap()
        .is_empty());
    let done = r
        .push(last.shard, &shards[last.shard][end - 1..end])
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0], expected()[1]);
}

/// The browser's resume: a cut anywhere in a spanning tensor's middle shard, continued from
/// `shard_received`, gives the same tensors.
#[test]
fn a_cut_in_a_spanning_tensor_resumes() {
    let (dir, m) = write(SHARD);
    let shards = shard_bytes(dir.path(), &m);
    let middle = parts(&m, "packed")[1].shard;
    let len = shards[middle].len();
    for cut in [0, 1, 5, len / 2, len - 1] {
        let mut r = StreamReader::new(&m).unwrap();
        let mut got = Vec::new();
        for (i, bytes) in shards.iter().enumerate() {
            if i == middle {
                got.extend(r.push(i, &bytes[..cut]).unwrap());
                let from = r.shard_received(i).unwrap() as usize;
                assert_eq!(from, cut);
                got.extend(r.push(i, &bytes[from..]).unwrap());
            } else {
                got.extend(r.push(i, bytes).unwrap());
            }
            r.finish_shard(i).unwrap();
        }
        r.finish().unwrap();
        assert_eq!(got, expected(), "cut at {cut}");
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_a_middle_shard_names_the_shard_and_the_tensor() {
    let (dir, m) = write(SHARD);
    let p = parts(&m, "packed")[1];
    let file = &m.shards[p.shard].file;
    flip_byte(&dir.path().join(file), 100);
    // The shard's own checksum fails first, when it is finished.
    let msg = err_text(read_package_dir(dir.path()));
    assert_mentions(
        &msg,
        &[
            &format!("shard {}", p.shard),
            file,
            "sha256",
            "`packed`",
            "re-download",
        ],
    );
    // Without `finish_shard` calls the tensor's checksum catches it at its last byte.
    let shards = shard_bytes(dir.path(), &m);
    let mut r = StreamReader::new(&m).unwrap();
    let last = parts(&m, "packed").last().unwrap().shard;
    let msg = err_text((0..=last).try_for_each(|i| r.push(i, &shards[i]).map(drop)));
    assert_mentions(
        &msg,
        &[
            "tensor `packed`",
            "spans shards",
            "sha256",
            "the manifest says",
        ],
    );
}

#[test]
fn a_truncated_middle_shard_is_refused() {
    let (dir, m) = write(SHARD);
    let p = parts(&m, "embed")[2];
    let path = dir.path().join(&m.shards[p.shard].file);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let msg = err_text(read_package_dir(dir.path()));
    assert_mentions(
        &msg,
        &[
            &format!("shard {}", p.shard),
            "tensor `embed`",
            "spans shards",
            "missing 10 of the",
            "cut short",
        ],
    );
    // Skipping the finish and pushing the next shard does not paper over the gap.
    let shards = shard_bytes(dir.path(), &m);
    let mut r = StreamReader::new(&m).unwrap();
    for (i, bytes) in shards.iter().enumerate().take(p.shard) {
        r.push(i, bytes).unwrap();
    }
    r.push(p.shard, &shards[p.shard][..bytes.len() - 10])
        .unwrap();
    let msg = err_text(r.push(p.shard + 1, &shards[p.shard + 1]));
    assert_mentions(&msg, &["tensor `embed`", "in order"]);
}

#[test]
fn shards_of_a_spanning_tensor_must_arrive_in_order() {
    let (dir, m) = write(SHARD);
    let shards = shard_bytes(dir.path(), &m);
    let p = parts(&m, "embed")[1];
    let mut r = StreamReader::new(&m).unwrap();
    let msg = err_text(r.push(p.shard, &shards[p.shard]));
    assert_mentions(
        &msg,
        &[&format!("shard {}", p.shard), "tensor `embed`", "in order"],
    );
}

// ---- manifests that place a spanning tensor badly, refused before any byte is read ----

#[test]
fn a_tensor_inside_another_ones_run_overlaps() {
    let (_dir, m0) = write(SHARD);
    let middle = parts(&m0, "embed")[2].shard;
    let mut m = m0.clone();
    let fits = m.tensors.iter_mut().find(|t| t.name == "fits").unwrap();
    (fits.shard, fits.offset) = (middle, 8);
    assert_mentions(
        &err_text(m.validate()),
        &["`fits`", "overlaps", "`embed`", &format!("shard {middle}")],
    );
    // Two runs continuing into the same shard.
    let mut m = m0;
    let (embed_start, embed_offset) = (entry(&m, "embed").shard, entry(&m, "embed").offset);
    let packed = m.tensors.iter_mut().find(|t| t.name == "packed").unwrap();
    (packed.shard, packed.offset) = (embed_start, embed_offset);
    let msg = err_text(m.validate());
    assert_mentions(&msg, &["`packed`", "overlap", "`embed`"]);
    assert_mentions(&err_text(StreamReader::new(&m)), &["overlap"]);
}

#[test]
fn a_run_past_the_last_shard_is_refused() {
    let (_dir, mut m) = write(SHARD);
    let end = parts(&m, "packed").last().unwrap().shard;
    m.tensors.retain(|t| t.shard < end);
    m.shards.truncate(end);
    assert_mentions(
        &err_text(m.validate()),
        &["`packed`", "runs past the last shard"],
    );
}

/// A run cannot leave a gap (it fills each shard to its end by definition) or jump one: the
/// only way to make it skip bytes is a shard that has none, which is refused.
#[test]
fn a_run_through_an_empty_shard_is_refused() {
    let (_dir, mut m) = write(SHARD);
    let p = parts(&m, "embed")[2];
    m.shards[p.shard].bytes = 0;
    assert_mentions(
        &err_text(m.validate()),
        &["`embed`", &format!("shard {}", p.shard), "empty"],
    );
}

#[test]
fn a_run_whose_length_disagrees_with_the_shape_is_refused() {
    let (_dir, m0) = write(SHARD);
    let mut m = m0.clone();
    let e = m.tensors.iter_mut().find(|t| t.name == "embed").unwrap();
    e.length -= 4;
    assert_mentions(&err_text(m.validate()), &["`embed`", "length is", "needs"]);
    let mut m = m0;
    let e = m.tensors.iter_mut().find(|t| t.name == "embed").unwrap();
    e.shape = vec![40, 34];
    assert_mentions(&err_text(m.validate()), &["`embed`", "length is", "needs"]);
}

/// Version 1 has no spanning: its reading of a tensor past its shard is unchanged.
#[test]
fn a_version_1_manifest_cannot_span() {
    let (_dir, mut m) = write(SHARD);
    m.version = 1;
    assert_mentions(
        &err_text(m.validate()),
        &["`embed`", "lies beyond the end of shard"],
    );
}

fn synthetic(shards: usize, tensors: Vec<(u64, usize, u64)>) -> Manifest {
    let digest = "0".repeat(64);
    Manifest {
        format: "relvqa-package".into(),
        version: 2,
        config: json!({}),
        tokenizer: relvqa::package::FileEntry {
            file: "tokenizer.json".into(),
            sha256: digest.clone(),
        },
        shards: (0..shards)
            .map(|i| ShardEntry {
                file: format!("model-{:05}.bin", i + 1),
                bytes: MAX_SHARD_BYTES as u64,
                sha256: digest.clone(),
            })
            .collect(),
        tensors: tensors
            .into_iter()
            .enumerate()
            .map(|(i, (elems, shard, offset))| TensorEntry {
                name: format!("t{i}"),
                shape: vec![elems as usize],
                encoding: Encoding::Dtype(FloatDtype::F32),
                shard,
                offset,
                length: elems * 4,
                sha256: digest.clone(),
            })
            .collect(),
        files: Vec::new(),
    }
}

/// The caps hold across shards: up to [`MAX_TENSOR_BYTES`] is fine in as many shards as it
/// takes, above it is refused from the shape alone; and a manifest of many tensors claiming
/// the same run of thousands of shards fails at its first collision.
#[test]
fn the_tensor_cap_and_hostile_runs() {
    // A Qwen2-VL-2B embedding in f32: 934 MB over 14 shards.
    let embedding = 151_936 * 1536;
    let m = synthetic(16, vec![(embedding, 0, 0)]);
    m.validate().unwrap();
    assert_eq!(m.tensor_parts(&m.tensors[0]).unwrap().len(), 14);
    let over = MAX_TENSOR_BYTES / 4 + 1;
    let m = synthetic(40, vec![(over, 0, 0)]);
    assert_mentions(
        &err_text(m.validate()),
        &["`t0`", "tensor limit", "refusing before allocating"],
    );
    let huge = MAX_TENSOR_BYTES / 4;
    let m = synthetic(16_384, (0..100_000).map(|_| (huge, 0, 0)).collect());
    let start = std::time::Instant::now();
    assert_mentions(&err_text(m.validate()), &["`t1`", "overlap", "`t0`"]);
    assert!(start.elapsed().as_secs() < 5);
}
