//! The quantized package format: round trips through the writer and the streaming reader, and
//! every malformed manifest or shard refused with a message that names what is wrong.

use std::fs;
use std::path::Path;

use half::f16;
use relvqa::package::{
    is_package_dir, read_package_dir, write_package, Encoding, FloatDtype, LoadedTensor, Manifest,
    PackageTensor, StreamReader, TensorData, MANIFEST_FILE, MAX_SHARD_BYTES,
};
use relvqa::quant::spec::SUPPORTED_BITS;
use relvqa::quant::{rtn, QuantSpec};
use relvqa::Result;
use serde_json::json;
use tempfile::TempDir;

const TOKENIZER: &[u8] = br#"{"version":"1.0","model":{"type":"WordLevel"}}"#;

fn weights(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
        .collect()
}

/// Float tensors (f16 of odd length so padding follows it, f32) and one packed tensor per bit
/// width, each with a different group size.
fn sample_tensors() -> Vec<(String, PackageTensor)> {
    let mut out = vec![
        (
            "norm.weight".to_string(),
            PackageTensor::Float {
                shape: vec![3],
                data: weights(3, 1).into_iter().map(f16::from_f32).collect(),
            },
        ),
        (
            "embed.weight".to_string(),
            PackageTensor::Float32 {
                shape: vec![5, 7],
                data: weights(35, 2),
            },
        ),
    ];
    for (i, &bits) in SUPPORTED_BITS.iter().enumerate() {
        let group = [32, 64, 128, 64][i];
        let (rows, cols) = (6, 128);
        let spec = QuantSpec::new(bits, group).unwrap();
        let name = format!("layers.{i}.proj.weight");
        let p = rtn::quantize(&name, &weights(rows * cols, 3 + i), rows, cols, spec).unwrap();
        out.push((name, PackageTensor::Packed(p)));
    }
    out
}

fn config() -> serde_json::Value {
    json!({"model_type": "idefics3", "image_token_id": 5})
}

fn write_sample(max_shard_bytes: usize) -> (TempDir, Manifest) {
    let dir = TempDir::new().unwrap();
    let m = write_package(
        dir.path(),
        &config(),
        TOKENIZER,
        sample_tensors(),
        max_shard_bytes,
    )
    .unwrap();
    (dir, m)
}

fn expected(name: &str, t: PackageTensor) -> LoadedTensor {
    let shape = t.shape();
    let data = match t {
        PackageTensor::Float { data, .. } => TensorData::F16(data),
        PackageTensor::Float32 { data, .. } => TensorData::F32(data),
        PackageTensor::Packed(p) => TensorData::Packed(p),
    };
    LoadedTensor {
        name: name.into(),
        shape,
        data,
    }
}

fn expected_all() -> Vec<LoadedTensor> {
    sample_tensors()
        .into_iter()
        .map(|(n, t)| expected(&n, t))
        .collect()
}

fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should mention {p:?}");
    }
}

/// Stream every shard of `dir` through a fresh reader in chunks of `chunk` bytes.
fn stream_dir(dir: &Path, m: &Manifest, chunk: usize) -> Result<Vec<LoadedTensor>> {
    let mut r = StreamReader::new(m)?;
    let mut out = Vec::new();
    for (i, s) in m.shards.iter().enumerate() {
        let bytes = fs::read(dir.join(&s.file)).unwrap();
        for c in bytes.chunks(chunk.max(1)) {
            out.extend(r.push(i, c)?);
        }
        r.finish_shard(i)?;
    }
    r.finish()?;
    assert_eq!(r.bytes_received(), r.bytes_total());
    Ok(out)
}

#[test]
fn round_trip_floats_and_every_bit_width() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    assert!(is_package_dir(dir.path()));
    assert_eq!(m.shards.len(), 1);
    assert_eq!(m.shards[0].file, "model-00001.bin");
    let (read_m, tok, tensors) = read_package_dir(dir.path()).unwrap();
    assert_eq!(read_m, m);
    assert_eq!(tok, TOKENIZER);
    assert_eq!(tensors, expected_all());
    let bits: Vec<u32> = m
        .tensors
        .iter()
        .filter_map(|t| match t.encoding {
            Encoding::Quant(q) => Some(q.bits),
            Encoding::Dtype(_) => None,
        })
        .collect();
    assert_eq!(bits, SUPPORTED_BITS);
    assert!(m.tensors.iter().all(|t| t.offset % 4 == 0));
    // The f16 [3] tensor is 6 bytes, so the next one starts after 2 bytes of padding.
    assert_eq!((m.tensors[1].offset, m.tensors[0].length), (8, 6));
}

#[test]
fn manifest_json_has_the_documented_shape() {
    let (dir, _) = write_sample(MAX_SHARD_BYTES);
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(v["format"], "relvqa-package");
    assert_eq!(v["version"], 1);
    assert_eq!(v["config"], config());
    assert_eq!(v["tokenizer"]["file"], "tokenizer.json");
    assert_eq!(v["tensors"][0]["encoding"], json!({"dtype": "f16"}));
    assert_eq!(v["tensors"][1]["encoding"], json!({"dtype": "f32"}));
    assert_eq!(
        v["tensors"][2]["encoding"],
        json!({"quant": {"method": "rtn", "bits": 8, "group": 32, "axis": 1}})
    );
    assert_eq!(v["tensors"][2]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn one_byte_seven_byte_and_whole_shard_chunks_give_identical_tensors() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    let whole = stream_dir(dir.path(), &m, usize::MAX).unwrap();
    assert_eq!(whole, expected_all());
    assert_eq!(stream_dir(dir.path(), &m, 1).unwrap(), whole);
    assert_eq!(stream_dir(dir.path(), &m, 7).unwrap(), whole);
}

#[test]
fn tensors_arrive_as_soon_as_their_bytes_do() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    let bytes = fs::read(dir.path().join("model-00001.bin")).unwrap();
    let mut r = StreamReader::new(&m).unwrap();
    let first_end = (m.tensors[0].offset + m.tensors[0].length) as usize;
    assert!(r.push(0, &bytes[..first_end - 1]).unwrap().is_empty());
    let got = r.push(0, &bytes[first_end - 1..first_end]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "norm.weight");
    let p = r.progress();
    assert_eq!((p.bytes_received, p.tensors_loaded), (first_end as u64, 1));
    assert_eq!(p.tensors_total, m.tensors.len());
    let rest = r.push(0, &bytes[first_end..]).unwrap();
    assert_eq!(rest.len(), m.tensors.len() - 1);
    r.finish_shard(0).unwrap();
    r.finish().unwrap();
}

#[test]
fn small_shard_limit_splits_into_several_shards() {
    let limit = 900;
    let (dir, m) = write_sample(limit);
    assert!(m.shards.len() > 2, "{} shards", m.shards.len());
    for (i, s) in m.shards.iter().enumerate() {
        assert_eq!(s.file, format!("model-{:05}.bin", i + 1));
        assert!(s.bytes <= limit as u64);
        assert_eq!(
            fs::metadata(dir.path().join(&s.file)).unwrap().len(),
            s.bytes
        );
    }
    let (_, _, tensors) = read_package_dir(dir.path()).unwrap();
    assert_eq!(tensors, expected_all());
    assert_eq!(stream_dir(dir.path(), &m, 7).unwrap(), expected_all());
}

#[test]
fn rewriting_a_directory_removes_shards_it_no_longer_uses() {
    let (dir, _) = write_sample(900);
    assert!(dir.path().join("model-00003.bin").exists());
    let m = write_package(
        dir.path(),
        &config(),
        TOKENIZER,
        sample_tensors(),
        MAX_SHARD_BYTES,
    )
    .unwrap();
    assert_eq!(m.shards.len(), 1);
    assert!(!dir.path().join("model-00003.bin").exists());
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    assert_eq!(read_package_dir(dir.path()).unwrap().2, expected_all());
}

// ---- malformed manifests, refused by `validate` before any shard byte is read ----

fn sample_manifest() -> Manifest {
    write_sample(MAX_SHARD_BYTES).1
}

#[test]
fn overlapping_tensors_are_refused() {
    let mut m = sample_manifest();
    m.tensors[3].offset = m.tensors[2].offset + 4;
    let msg = err_text(m.validate());
    assert_mentions(
        &msg,
        &["layers.1.proj.weight", "overlaps", "layers.0.proj.weight"],
    );
    assert_mentions(&err_text(StreamReader::new(&m)), &["overlaps"]);
}

#[test]
fn tensor_beyond_its_shard_is_refused() {
    let mut m = sample_manifest();
    let last = m.tensors.len() - 1;
    m.tensors[last].offset = m.shards[0].bytes.next_multiple_of(4);
    let msg = err_text(m.validate());
    assert_mentions(&msg, &["layers.3.proj.weight", "beyond the end of shard 0"]);
    m.tensors[last].offset = u64::MAX - 3;
    assert_mentions(&err_text(m.validate()), &["beyond the end"]);
}

#[test]
fn a_100_gb_tensor_is_refused_before_allocating() {
    let mut m = sample_manifest();
    let t = &mut m.tensors[1];
    t.shape = vec![100_000, 262_144];
    t.encoding = Encoding::Dtype(FloatDtype::F32);
    t.length = 100_000 * 262_144 * 4;
    m.shards[0].bytes = MAX_SHARD_BYTES as u64;
    let msg = err_text(m.validate());
    assert_mentions(
        &msg,
        &[
            "embed.weight",
            "104857600000 bytes",
            "tensor limit",
            "refusing before allocating",
        ],
    );
    m.tensors[1].shape = vec![usize::MAX, 4];
    assert_mentions(
        &err_text(m.validate()),
        &["embed.weight", "too large to address"],
    );
}

#[test]
fn a_shard_above_the_limit_is_refused() {
    let mut m = sample_manifest();
    m.shards[0].bytes = MAX_SHARD_BYTES as u64 + 1;
    assert_mentions(
        &err_text(m.validate()),
        &["shard 0", "model-00001.bin", "shard limit"],
    );
}

fn set_quant(m: &mut Manifest, i: usize, f: impl FnOnce(&mut relvqa::package::QuantEncoding)) {
    match &mut m.tensors[i].encoding {
        Encoding::Quant(q) => f(q),
        Encoding::Dtype(_) => panic!("tensor {i} is not packed"),
    }
}

#[test]
fn unsupported_bits_group_axis_and_k_are_refused() {
    let m0 = sample_manifest();
    let mut m = m0.clone();
    set_quant(&mut m, 3, |q| q.bits = 5);
    assert_mentions(
        &err_text(m.validate()),
        &["layers.1.proj.weight", "5 bits is not supported"],
    );
    let mut m = m0.clone();
    set_quant(&mut m, 3, |q| q.group = 48);
    assert_mentions(
        &err_text(m.validate()),
        &["layers.1.proj.weight", "group size 48 is not supported"],
    );
    let mut m = m0.clone();
    set_quant(&mut m, 3, |q| q.axis = 0);
    assert_mentions(&err_text(m.validate()), &["layers.1.proj.weight", "axis 0"]);
    let mut m = m0.clone();
    m.tensors[4].shape = vec![6, 96]; // group 128 does not divide 96
    assert_mentions(
        &err_text(m.validate()),
        &[
            "layers.2.proj.weight",
            "96 is not a multiple of group size 128",
        ],
    );
    let mut m = m0;
    m.tensors[4].shape = vec![6, 2, 64];
    assert_mentions(&err_text(m.validate()), &["layers.2.proj.weight", "2-D"]);
}

#[test]
fn length_that_disagrees_with_the_shape_is_refused() {
    let mut m = sample_manifest();
    m.tensors[2].length += 4;
    assert_mentions(
        &err_text(m.validate()),
        &["layers.0.proj.weight", "length is", "needs"],
    );
}

#[test]
fn bad_indices_names_and_hashes_are_refused() {
    let m0 = sample_manifest();
    let mut m = m0.clone();
    m.tensors[2].shard = 7;
    assert_mentions(
        &err_text(m.validate()),
        &["layers.0.proj.weight", "shard index 7 is out of range"],
    );
    let mut m = m0.clone();
    m.tensors[3].name = m.tensors[2].name.clone();
    assert_mentions(
        &err_text(m.validate()),
        &["layers.0.proj.weight", "appears twice"],
    );
    let mut m = m0.clone();
    m.tensors[2].sha256 = "xyz".into();
    assert_mentions(
        &err_text(m.validate()),
        &["layers.0.proj.weight", "not 64 hexadecimal digits"],
    );
    let mut m = m0.clone();
    m.shards[0].sha256.pop();
    assert_mentions(&err_text(m.validate()), &["shard 0", "sha256"]);
    let mut m = m0.clone();
    m.shards[0].file = "../../etc/passwd".into();
    assert_mentions(&err_text(m.validate()), &["not a plain file name"]);
    let mut m = m0.clone();
    m.tensors[0].shape = vec![3, 0];
    assert_mentions(&err_text(m.validate()), &["norm.weight", "none of them 0"]);
    let mut m = m0.clone();
    m.version = 3;
    assert_mentions(&err_text(m.validate()), &["version 3 is not supported"]);
    let mut m = m0.clone();
    m.version = 0;
    assert_mentions(&err_text(m.validate()), &["version 0 is not supported"]);
    let mut m = m0;
    m.format = "gguf".into();
    assert_mentions(&err_text(m.validate()), &["not a relvqa package"]);
}

#[test]
fn manifest_that_is_not_json_is_refused() {
    let msg = err_text(Manifest::from_json(b"{\"format\": 3"));
    assert_mentions(&msg, &["manifest.json", "not a valid package manifest"]);
}

// ---- shards that do not match their manifest ----

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_names_the_tensor_it_hit() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    let t = &m.tensors[4];
    flip_byte(&dir.path().join("model-00001.bin"), t.offset + t.length / 2);
    let msg = err_text(read_package_dir(dir.path()));
    assert_mentions(
        &msg,
        &[
            "layers.2.proj.weight",
            "sha256",
            "model-00001.bin",
            "re-download",
        ],
    );
    assert_mentions(
        &err_text(stream_dir(dir.path(), &m, 7)),
        &["layers.2.proj.weight", "sha256"],
    );
}

#[test]
fn a_flipped_padding_byte_fails_the_shard_checksum() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    flip_byte(&dir.path().join("model-00001.bin"), 6);
    let msg = err_text(read_package_dir(dir.path()));
    assert_mentions(
        &msg,
        &["shard 0", "model-00001.bin", "sha256", "the manifest says"],
    );
    assert_eq!(m.tensors[1].offset, 8);
}

#[test]
fn a_corrupt_tokenizer_is_refused() {
    let (dir, _) = write_sample(MAX_SHARD_BYTES);
    fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
    assert_mentions(
        &err_text(read_package_dir(dir.path())),
        &["tokenizer.json", "sha256"],
    );
}

#[test]
fn a_truncated_shard_says_which_tensor_is_short() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    let path = dir.path().join("model-00001.bin");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let last = m.tensors.last().unwrap();
    let msg = err_text(read_package_dir(dir.path()));
    assert_mentions(
        &msg,
        &[
            "layers.3.proj.weight",
            &format!("missing 10 of its {} bytes", last.length),
            "cut short",
        ],
    );

    // A stream that stops before a tensor even starts.
    let mut r = StreamReader::new(&m).unwrap();
    r.push(0, &bytes[..4]).unwrap();
    let msg = err_text(r.finish_shard(0));
    assert_mentions(
        &msg,
        &["norm.weight", "missing 2 of its 6 bytes", "ended after 4"],
    );
    let msg = err_text(StreamReader::new(&m).unwrap().finish());
    assert_mentions(&msg, &["shard 0", "not received completely"]);
}

#[test]
fn bytes_beyond_the_declared_shard_length_are_refused() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    let path = dir.path().join("model-00001.bin");
    let mut bytes = fs::read(&path).unwrap();
    bytes.push(0);
    fs::write(&path, &bytes).unwrap();
    assert_mentions(
        &err_text(read_package_dir(dir.path())),
        &["shard 0", "manifest declares", "re-download"],
    );
    let mut r = StreamReader::new(&m).unwrap();
    assert_mentions(
        &err_text(r.push(0, &bytes)),
        &["manifest declares", &m.shards[0].bytes.to_string()],
    );
    assert_mentions(&err_text(r.push(0, &[1])), &["earlier error"]);
}

#[test]
fn writer_refuses_what_a_reader_would_refuse() {
    let dir = TempDir::new().unwrap();
    let short = PackageTensor::Float {
        shape: vec![2, 3],
        data: vec![f16::ZERO; 5],
    };
    let msg = err_text(write_package(
        dir.path(),
        &config(),
        TOKENIZER,
        vec![("short".into(), short)],
        1024,
    ));
    assert_mentions(&msg, &["short", "5 values do not fill shape [2, 3]"]);
    assert!(!is_package_dir(dir.path()));
    let p = rtn::quantize("w", &weights(64, 0), 1, 64, QuantSpec::new(4, 64).unwrap()).unwrap();
    let twice = vec![
        ("w".to_string(), PackageTensor::Packed(p.clone())),
        ("w".to_string(), PackageTensor::Packed(p)),
    ];
    let msg = err_text(write_package(dir.path(), &config(), TOKENIZER, twice, 1024));
    assert_mentions(&msg, &["`w`", "twice"]);
    let mut p = rtn::quantize("w", &weights(64, 0), 1, 64, QuantSpec::new(4, 64).unwrap()).unwrap();
    p.words.pop();
    let broken = vec![("broken".to_string(), PackageTensor::Packed(p))];
    let msg = err_text(write_package(
        dir.path(),
        &config(),
        TOKENIZER,
        broken,
        1024,
    ));
    assert_mentions(&msg, &["broken", "has 7 words"]);
    // Refused before anything was written.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The browser's resume path: a download cut anywhere continues from `shard_received` with the
/// rest of the same shard, and gives the same tensors as one uninterrupted read.
#[test]
fn a_cut_download_resumes_from_shard_received() {
    let (dir, m) = write_sample(MAX_SHARD_BYTES);
    let bytes = fs::read(dir.path().join("model-00001.bin")).unwrap();
    for cut in [1, 7, bytes.len() / 2, bytes.len() - 1] {
        let mut r = StreamReader::new(&m).unwrap();
        let mut got = r.push(0, &bytes[..cut]).unwrap();
        let from = r.shard_received(0).unwrap() as usize;
        assert_eq!(from, cut);
        got.extend(r.push(0, &bytes[from..]).unwrap());
        r.finish_shard(0).unwrap();
        r.finish().unwrap();
        assert_eq!(got.len(), m.tensors.len());
    }
    assert_eq!(StreamReader::new(&m).unwrap().shard_received(9), None);
}

/// The small files the browser fetches beside the shards are checked against the manifest.
#[test]
fn verify_file_checks_the_tokenizer_and_refuses_unlisted_files() {
    let (_dir, m) = write_sample(MAX_SHARD_BYTES);
    m.verify_file(&m.tokenizer.file, TOKENIZER).unwrap();
    let mut bad = TOKENIZER.to_vec();
    bad[0] ^= 1;
    assert_mentions(
        &err_text(m.verify_file(&m.tokenizer.file, &bad)),
        &["tokenizer.json", "sha256", "corrupt"],
    );
    assert_mentions(
        &err_text(m.verify_file("selector.safetensors", b"x")),
        &["selector.safetensors", "not listed"],
    );
}
