//! Qwen2-VL quantized packages: `relvqa quantize` of the committed tiny fixture, loaded
//! through the same streaming sink as Idefics3 packages, against load-time HQQ
//! (`load_dir_with(.., Some(hqq))`, which `relvqa ask --hqq-bits` runs) on CPU and GPU, through
//! `relvqa ask`, and with bad input. MBQ packages: tests/qwen2vl_mbq.rs.

mod common;

use std::path::Path;
use std::process::Command;

use common::qwen2vl::{ask_fixture_json, fixture, hqq, max_diff, model, prompt_logits};
use relvqa::backend::cpu::CpuBackend;
use relvqa::model::qwen2vl::loader::{load_dir_with, load_path};
use relvqa::package::{
    read_model_file, read_package_dir, write_model_file, write_package, Encoding, Manifest,
    TensorData, MANIFEST_FILE, MAX_SHARD_BYTES,
};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::pipeline::{quantize_dir, QuantizeOptions};
use relvqa::quant::{Method, QuantSpec};
use relvqa::Error;

/// `relvqa quantize --model <fixture> --method <method> --bits <bits> --group 32 --out <dir>`.
fn quantize_cli(method: &str, bits: u32, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["quantize", "--model"])
        .arg(fixture())
        .args([
            "--method",
            method,
            "--bits",
            &bits.to_string(),
            "--group",
            "32",
        ])
        .arg("--out")
        .arg(out)
        .output()
        .expect("run relvqa")
}

/// The fixture as an HQQ 4-bit package in a fresh directory.
fn hqq4_package() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = quantize_cli("hqq", 4, &dir.path().join("pkg"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// What the package holds: the language model's 14 linears packed with HQQ, every other
/// tensor f32 as in the checkpoint, the processor settings and template beside them; and its
/// weights take fewer bytes than the f32 checkpoint's.
#[test]
fn hqq_package_packs_the_language_model_and_is_smaller() {
    let tmp = hqq4_package();
    let pkg = tmp.path().join("pkg");
    let (manifest, _, tensors) = read_package_dir(&pkg).expect("read package");
    assert_eq!(manifest.config["model_type"], "qwen2_vl");
    let packed: Vec<&str> = tensors
        .iter()
        .filter(|t| matches!(t.data, TensorData::Packed(_)))
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(packed.len(), 14, "{packed:?}");
    assert!(packed.iter().all(|n| n.starts_with("model.layers.")));
    assert!(tensors
        .iter()
        .filter(|t| !matches!(t.data, TensorData::Packed(_)))
        .all(|t| matches!(t.data, TensorData::F32(_))));
    assert!(manifest.tensors.iter().any(|t| matches!(
        t.encoding,
        Encoding::Quant(q) if q.method == Method::Hqq && q.bits == 4 && q.group == 32
    )));
    for f in ["preprocessor_config.json", "chat_template.json"] {
        assert!(manifest.file(f).is_some(), "{f} missing from the manifest");
    }
    let checkpoint = std::fs::metadata(fixture().join("model.safetensors"))
        .expect("checkpoint")
        .len();
    let package = manifest.total_bytes();
    eprintln!("weights: package {package} bytes, f32 checkpoint {checkpoint} bytes");
    assert!(package < checkpoint, "{package} >= {checkpoint}");
}

/// The package's model gives exactly the prompt logits of HQQ at load time on the CPU: same
/// quantizer on the same values, and every other tensor uploaded in the same form.
#[test]
fn package_logits_equal_load_time_hqq_on_the_cpu() {
    let tmp = hqq4_package();
    let pkg = load_path(CpuBackend::new(), &tmp.path().join("pkg"), None).expect("package");
    let live = load_dir_with(CpuBackend::new(), &fixture(), hqq(4)).expect("load-time hqq");
    let (a, b) = (prompt_logits(&pkg), prompt_logits(&live));
    let float = prompt_logits(&model());
    eprintln!(
        "CPU: package vs load-time HQQ max |Δlogit| {:.3e}; vs float {:.3e}",
        max_diff(&a, &b),
        max_diff(&a, &float)
    );
    assert_eq!(a, b, "package and load-time HQQ logits differ");
}

/// The same on the GPU backend (wgpu; lavapipe here): the package equals load-time HQQ on the
/// GPU exactly, and agrees with the CPU as closely as `hqq_on_the_gpu_agrees_with_the_cpu` in
/// tests/qwen2vl.rs asks (the CPU kernels round activations to int8, the GPU does not).
#[test]
fn package_logits_equal_load_time_hqq_on_the_gpu() {
    let tmp = hqq4_package();
    let dir = tmp.path().join("pkg");
    let gpu = prompt_logits(&load_path(common::gpu::gpu_backend(), &dir, None).expect("gpu"));
    let live = prompt_logits(
        &load_dir_with(common::gpu::gpu_backend(), &fixture(), hqq(4)).expect("gpu hqq"),
    );
    let cpu = prompt_logits(&load_path(CpuBackend::new(), &dir, None).expect("cpu"));
    let float = prompt_logits(&model());
    let (same, between, cpu_err) = (
        max_diff(&gpu, &live),
        max_diff(&gpu, &cpu),
        max_diff(&cpu, &float),
    );
    eprintln!(
        "GPU: package vs load-time HQQ {same:.3e}; package GPU vs CPU {between:.3e}; CPU vs float {cpu_err:.3e}"
    );
    assert_eq!(gpu, live, "GPU package and load-time HQQ logits differ");
    assert!(between < 0.25 * cpu_err, "{between} vs {cpu_err}");
}

/// `relvqa ask --model PKG --json` answers in the checkpoint's schema, greedy ids and all as
/// load-time HQQ gives them; on the GPU too.
#[test]
fn cli_ask_answers_with_a_qwen2vl_package() {
    let tmp = hqq4_package();
    let pkg = tmp.path().join("pkg");
    let v = ask_fixture_json(&pkg, &[]);
    let live = ask_fixture_json(&fixture(), &["--hqq-bits", "4", "--hqq-group", "32"]);
    assert_eq!(v["answer"], live["answer"]);
    assert_eq!(v["confidence"], live["confidence"]);
    let g = ask_fixture_json(&pkg, &["--backend", "gpu"]);
    assert_eq!(g["backend"], "wgpu", "{g}");
    // Load-time HQQ on a package would quantize twice: refused, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["ask", "--hqq-bits", "4", "--model"])
        .arg(&pkg)
        .arg("--image")
        .arg(fixture().join("image.png"))
        .args(["--question", "what?"])
        .output()
        .expect("run relvqa");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a package"), "{stderr}");
}

/// `quantize_dir` with HQQ 4-bit into `out` with shards of at most `max_shard_bytes`, the
/// files the loader reads beside them (what `relvqa quantize` does with the default limit).
fn hqq4_package_with_shards(out: &Path, max_shard_bytes: usize) -> Manifest {
    let o = QuantizeOptions {
        method: Method::Hqq,
        spec: QuantSpec::new(4, 32).expect("spec"),
        calib: 4,
        vision: false,
        hqq: HqqOptions::default(),
    };
    let q = quantize_dir(&fixture(), &o, |_, _, _| {}).expect("quantize");
    let m = write_package(out, &q.config, &q.tokenizer, q.tensors, max_shard_bytes)
        .expect("write package");
    for &name in q.model_files {
        if let Some(bytes) = read_model_file(&fixture(), name).expect("model file") {
            write_model_file(out, name, &bytes).expect("attach");
        }
    }
    m
}

/// A package whose shards are smaller than its embedding, so the embedding runs on across
/// shards as a real Qwen2-VL-2B one (151936 x 1536) must with 64 MiB shards, loads to exactly
/// the logits of the same package in one shard.
#[test]
fn spanning_embedding_gives_the_same_logits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let m1 = hqq4_package_with_shards(&whole, MAX_SHARD_BYTES);
    let m2 = hqq4_package_with_shards(&split, 10_000);
    assert_eq!((m1.version, m1.shards.len()), (1, 1));
    assert_eq!(m2.version, 2);
    let embed = m2
        .tensors
        .iter()
        .find(|t| t.name == "model.embed_tokens.weight")
        .expect("embedding");
    let parts = m2.tensor_parts(embed).expect("parts");
    assert!(parts.len() >= 3, "{parts:?}");
    assert!(m2.shards.iter().all(|s| s.bytes <= 10_000));
    let a = prompt_logits(&load_path(CpuBackend::new(), &whole, None).expect("whole"));
    let b = prompt_logits(&load_path(CpuBackend::new(), &split, None).expect("split"));
    assert_eq!(a, b, "spanning shards changed the logits");
    // And the same as `relvqa quantize` wrote it.
    let cli = hqq4_package();
    let c =
        prompt_logits(&load_path(CpuBackend::new(), &cli.path().join("pkg"), None).expect("cli"));
    assert_eq!(a, c);
}

/// RTN packages load too (the same sink; RTN's own rounding).
#[test]
fn rtn_package_loads_and_differs_from_hqq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = quantize_cli("rtn", 4, &tmp.path().join("rtn"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rtn =
        prompt_logits(&load_path(CpuBackend::new(), &tmp.path().join("rtn"), None).expect("rtn"));
    let hqq = prompt_logits(&load_dir_with(CpuBackend::new(), &fixture(), hqq(4)).expect("hqq"));
    assert!(rtn.iter().all(|x| x.is_finite()));
    assert_ne!(rtn, hqq);
}

/// A manifest without a tensor the model needs: the load names it (the shard's bytes for it
/// are skipped like padding, so this is the model's error, not the reader's).
#[test]
fn package_missing_a_tensor_names_it() {
    let tmp = hqq4_package();
    let dir = tmp.path().join("pkg");
    let path = dir.join(MANIFEST_FILE);
    let mut m = Manifest::from_json(&std::fs::read(&path).expect("read")).expect("manifest");
    let drop = "visual.merger.mlp.2.weight";
    let before = m.tensors.len();
    m.tensors.retain(|t| t.name != drop);
    assert_eq!(m.tensors.len(), before - 1);
    std::fs::write(&path, m.to_json().expect("json")).expect("write");
    let e = load_path(CpuBackend::new(), &dir, None).expect_err("missing tensor");
    assert!(
        matches!(&e, Error::MissingTensor { name } if name == drop),
        "{e:?}"
    );
}

/// --vision on Qwen2-VL: a typed error that says what to use instead; and an Idefics3-only
/// command given a Qwen2-VL package says so. (MBQ builds Qwen2-VL packages: tests/qwen2vl_mbq.rs.)
#[test]
fn vision_on_qwen2vl_is_a_clear_error() {
    let o = QuantizeOptions {
        method: Method::Hqq,
        spec: QuantSpec::new(4, 32).expect("spec"),
        calib: 4,
        vision: true,
        hqq: HqqOptions::default(),
    };
    let e = quantize_dir(&fixture(), &o, |_, _, _| {})
        .err()
        .expect("vision refused");
    assert!(
        matches!(
            &e,
            Error::Unsupported {
                arch: "Qwen2-VL",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("leave out --vision"), "{e}");

    let pkg = hqq4_package();
    let e = relvqa::model::loader::load_path(CpuBackend::new(), &pkg.path().join("pkg"))
        .expect_err("idefics3 loader refuses a qwen2_vl package");
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("qwen2_vl"), "{e}");
}
