//! `AnyVqa`, the one answer path of `relvqa ask`, `relvqa generate` and the page: the page's
//! entry points (files as bytes, a package streamed into an `AnySink`) must give what the
//! CLI's (a directory or package on disk) gives, for both families, and the in-tab HQQ stage
//! must pick each family's linears.

mod common;

use std::path::Path;

use common::qwen2vl::fixture;
use relvqa::backend::cpu::CpuBackend;
use relvqa::model::any_vqa::{AnySink, AnyVqa, ModelFiles};
use relvqa::model::arch::Architecture;
use relvqa::model::chat::ChatTemplate;
use relvqa::model::image::decode_image;
use relvqa::package::{open_package_dir, read_model_file, stream_package_dir, LoadedTensor};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::load_time::HqqStage;
use relvqa::quant::QuantSpec;

fn image(path: &Path) -> image::RgbImage {
    decode_image(&std::fs::read(path).expect("image")).expect("decode")
}

fn optional(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(name)).ok()
}

/// The model built as the page builds it: from the folder's files as bytes.
fn from_files(dir: &Path) -> AnyVqa<CpuBackend> {
    let read = |n: &str| std::fs::read(dir.join(n)).expect(n);
    let (config, tokenizer, weights) = (
        read("config.json"),
        read("tokenizer.json"),
        read("model.safetensors"),
    );
    let (tc, ct, pre) = (
        optional(dir, "tokenizer_config.json"),
        optional(dir, "chat_template.json"),
        optional(dir, "preprocessor_config.json"),
    );
    AnyVqa::from_files(
        CpuBackend::new(),
        &ModelFiles {
            config: &config,
            tokenizer: &tokenizer,
            weights: &weights,
            tokenizer_config: tc.as_deref(),
            chat_template: ct.as_deref(),
            preprocessor: pre.as_deref(),
        },
    )
    .expect("from_files")
}

/// The package streamed tensor by tensor into an `AnySink`, as the page's `PackageLoader` does.
fn from_sink(dir: &Path) -> AnyVqa<CpuBackend> {
    let (manifest, tokenizer) = open_package_dir(dir).expect("open package");
    let mut sink = AnySink::for_manifest(CpuBackend::new(), &manifest).expect("sink");
    stream_package_dir(dir, &manifest, |t| sink.accept(t)).expect("stream");
    let template = ChatTemplate::from_model_dir(dir).expect("template");
    let pre = read_model_file(dir, "preprocessor_config.json").expect("preprocessor");
    sink.build(&tokenizer, template.as_ref(), pre.as_deref())
        .expect("build")
}

/// `relvqa quantize --method hqq --bits 4 --group 32` of the Qwen2-VL fixture, into `tmp`.
fn hqq4_package(tmp: &Path) -> std::path::PathBuf {
    let pkg = tmp.join("pkg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args([
            "quantize", "--method", "hqq", "--bits", "4", "--group", "32", "--model",
        ])
        .arg(fixture())
        .arg("--out")
        .arg(&pkg)
        .output()
        .expect("run relvqa");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pkg
}

fn answer(m: &AnyVqa<CpuBackend>, img: &image::RgbImage, q: &str) -> Vec<u32> {
    pollster::block_on(m.answer_image(img, q))
        .expect("answer")
        .tokens
}

#[test]
fn qwen2vl_from_the_pages_files_answers_like_the_cli_path() {
    let dir = fixture();
    let cli = AnyVqa::load_path(CpuBackend::new(), &dir, None).expect("load_path");
    let page = from_files(&dir);
    assert_eq!(page.architecture(), Architecture::Qwen2Vl);
    assert_eq!(page.hidden_size(), 64);
    let img = image(&dir.join("image2.png"));
    let want = answer(&cli, &img, "what is in the image?");
    assert_eq!(want.len(), 32, "a random model runs to the token limit");
    assert_eq!(answer(&page, &img, "what is in the image?"), want);
    // Text only: the prompt through Qwen2-VL's template, stopped at the same ids.
    let now = || 0.0;
    let a = pollster::block_on(cli.generate("hello", 5, &now)).expect("generate");
    let b = pollster::block_on(page.generate("hello", 5, &now)).expect("generate");
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.ids.len(), 5);
    pollster::block_on(page.warm_up()).expect("warm-up on the smallest image");
}

#[test]
fn idefics3_from_the_pages_files_tiles_like_the_cli_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/idefics3-tiny");
    let cli = AnyVqa::load_path(CpuBackend::new(), &dir, None).expect("load_path");
    let page = from_files(&dir);
    let AnyVqa::Idefics3(v) = &page else {
        panic!("the fixture is idefics3");
    };
    assert!(
        v.processor.is_some_and(|p| p.split),
        "the fixture's processor splits images"
    );
    assert!(v.chat.is_some(), "its chat template places an image");
    let img = image(&dir.join("image.png"));
    assert_eq!(
        answer(&page, &img, "what is it ?"),
        answer(&cli, &img, "what is it ?")
    );
}

#[test]
fn a_streamed_qwen2vl_package_answers_like_the_package_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = hqq4_package(tmp.path());
    let cli = AnyVqa::load_path(CpuBackend::new(), &pkg, None).expect("load package");
    let page = from_sink(&pkg);
    let img = image(&fixture().join("image.png"));
    assert_eq!(
        answer(&page, &img, "what is in the image?"),
        answer(&cli, &img, "what is in the image?")
    );
}

#[test]
fn in_tab_hqq_targets_each_familys_language_linears() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = hqq4_package(tmp.path());
    let (manifest, _) = open_package_dir(&pkg).expect("open");
    let spec = QuantSpec::new(4, 32).expect("spec");
    let mut stage =
        HqqStage::for_manifest(&manifest, spec, HqqOptions::default()).expect("qwen stage");
    assert_eq!(stage.progress(), (0, 14), "7 linears in each of 2 layers");
    // A package already quantized cannot be quantized again in the tab: a clear error.
    let mut first_packed = None;
    stream_package_dir(&pkg, &manifest, |t: LoadedTensor| {
        if first_packed.is_none() && t.name.ends_with("q_proj.weight") {
            first_packed = Some(t);
        }
        Ok(())
    })
    .expect("stream");
    let err = stage
        .apply(first_packed.expect("a q_proj"))
        .expect_err("packed input refused");
    assert!(err.to_string().contains("already quantized"), "{err}");
}
