//! Qwen2-VL against Hugging Face transformers: the committed golden fixture
//! (`tests/fixtures/golden/qwen2vl-tiny`, written by tools/golden/make_qwen2vl.py; no torch
//! needed here) on CPU and GPU, our processor and prompt builder against transformers' inputs,
//! and bad input that must fail with a clear error.

mod common;

use common::qwen2vl::{ask_fixture_json, fixture, hqq, max_diff, model, prompt_logits};

use std::path::Path;
use std::process::Command;

use relvqa::backend::cpu::CpuBackend;
use relvqa::backend::Backend;
use relvqa::model::arch::Architecture;
use relvqa::model::golden::DEFAULT_TOLERANCE;
use relvqa::model::qwen2vl::golden::{check_reference, QwenGolden};
use relvqa::model::qwen2vl::loader::{load_from_bytes_with, Qwen2VlModel};
use relvqa::model::qwen2vl::processor::{preprocess, smart_resize};
use relvqa::model::qwen2vl::Qwen2VlConfig;
use relvqa::Error;

fn golden(m: &Qwen2VlModel<CpuBackend>) -> QwenGolden {
    golden_file(m, "golden.safetensors")
}

fn golden_file(m: &Qwen2VlModel<CpuBackend>, name: &str) -> QwenGolden {
    let bytes = std::fs::read(fixture().join(name)).expect("read golden");
    QwenGolden::from_bytes(name, &bytes, m).expect("parse golden")
}

#[test]
fn committed_fixture_passes_on_cpu() {
    let m = model();
    let g = golden(&m);
    assert_eq!(g.grids, vec![[1, 6, 8]]);
    let r = pollster::block_on(check_reference(&m, &g, DEFAULT_TOLERANCE)).expect("check");
    assert!(
        r.passed(),
        "max |Δlogit| {:.3e} at {:?}; ours {:?} reference {:?}",
        r.max_abs_diff,
        r.max_at,
        r.generated_ours,
        r.generated_reference
    );
}

/// `Qwen2VLProcessor` rebuilt: smart_resize + BICUBIC + CLIP normalisation + patch order, and
/// the chat template with `<|image_pad|>` expanded, give exactly transformers' inputs.
#[test]
fn raw_inputs_equal_transformers() {
    let m = model();
    let g = golden(&m);
    let img = relvqa::model::image::decode_image(
        &std::fs::read(fixture().join("image.png")).expect("image"),
    )
    .expect("decode");
    let question = g.meta("question").expect("question in metadata");
    let ours = m.inputs(&img, question).expect("inputs");
    assert_eq!(ours.ids, g.input_ids);
    assert_eq!(ours.grids, g.grids);
    assert_eq!(ours.pixels.shape, g.pixel_values.shape);
    let max = ours
        .pixels
        .data
        .iter()
        .zip(&g.pixel_values.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-6, "pixels differ by {max:.3e}");
}

/// transformers' `smart_resize` values (Python's round-half-to-even included).
#[test]
fn smart_resize_matches_transformers() {
    // (h, w, min, max) -> (h', w'), computed with transformers 5.24.
    assert_eq!(smart_resize(76, 100, 28, 3136, 12544).ok(), Some((84, 112)));
    assert_eq!(smart_resize(70, 100, 28, 3136, 12544).ok(), Some((56, 112)));
    assert_eq!(smart_resize(10, 10, 28, 3136, 12544).ok(), Some((56, 56)));
    assert_eq!(
        smart_resize(1000, 800, 28, 3136, 12544).ok(),
        Some((112, 84))
    );
}

#[test]
fn cli_check_reference_passes_and_raw_too() {
    let dir = fixture();
    for raw in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relvqa"));
        cmd.arg("check-reference")
            .arg("--model")
            .arg(&dir)
            .arg("--golden")
            .arg(dir.join("golden.safetensors"));
        if raw {
            cmd.arg("--raw");
        }
        let out = cmd.output().expect("run relvqa");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "raw={raw}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("qwen2_vl") && stdout.contains("PASS"),
            "{stdout}"
        );
        assert!(stdout.contains(": equal"), "{stdout}");
        if raw {
            assert!(stdout.contains("prompt ids equal"), "{stdout}");
        }
    }
}

/// The GPU path (wgpu; lavapipe in CI) on the same fixture, through the CLI.
#[test]
fn committed_fixture_passes_on_the_gpu() {
    let dir = fixture();
    for golden in ["golden.safetensors", "golden-2images.safetensors"] {
        let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
            .args(["check-reference", "--backend", "gpu", "--model"])
            .arg(&dir)
            .arg("--golden")
            .arg(dir.join(golden))
            .output()
            .expect("run relvqa");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{golden}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("wgpu") && stdout.contains("PASS"),
            "{stdout}"
        );
    }
}

/// Two images of different sizes in one prompt (`make_qwen2vl.py --second-image 60x90`): each
/// image's features land in its own `<|image_pad|>` run and multimodal RoPE continues its
/// positions after the first image's grid, as transformers does.
#[test]
fn two_images_of_different_sizes_pass() {
    let m = model();
    let g = golden_file(&m, "golden-2images.safetensors");
    assert_eq!(g.grids, vec![[1, 6, 8], [1, 6, 4]]);
    let r = pollster::block_on(check_reference(&m, &g, DEFAULT_TOLERANCE)).expect("check");
    assert!(
        r.passed(),
        "max |Δlogit| {:.3e} at {:?}; ours {:?} reference {:?}",
        r.max_abs_diff,
        r.max_at,
        r.generated_ours,
        r.generated_reference
    );
}

#[test]
fn unknown_architecture_is_a_clear_config_error() {
    let cfg = r#"{"model_type": "llava", "text_config": {}, "vision_config": {}}"#;
    let e = Architecture::from_config_json(cfg).expect_err("llava is not supported");
    let msg = e.to_string();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(
        msg.contains("llava") && msg.contains("idefics3") && msg.contains("qwen2_vl"),
        "{msg}"
    );
    assert!(matches!(
        Qwen2VlConfig::from_json(cfg),
        Err(Error::Config(_))
    ));
    // The CLI says the same, and fails.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), cfg).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .arg("check-reference")
        .arg("--model")
        .arg(dir.path())
        .arg("--golden")
        .arg(fixture().join("golden.safetensors"))
        .output()
        .expect("run relvqa");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown model_type `llava`"), "{stderr}");
}

/// The hub's Qwen2-VL-2B layout (transformers 4: decoder fields at the top level, `rope_scaling`
/// with `type: mrope`, `in_chans`) parses to the same numbers.
#[test]
fn hub_layout_config_parses() {
    let cfg = r#"{
        "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
        "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": true, "use_sliding_window": false, "hidden_act": "silu",
        "image_token_id": 151655, "video_token_id": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16,
            "in_chans": 3, "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "temporal_patch_size": 2}
    }"#;
    let c = Qwen2VlConfig::from_json(cfg).expect("hub config");
    assert_eq!(c.text.mrope_section, [16, 24, 24]);
    assert_eq!(c.text.head_dim(), 128);
    assert_eq!(c.text.rope_theta, 1e6);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.vision.in_channels, 3);
    assert_eq!(c.vision.mlp_hidden(), 5120);
    // Sections that do not cover head_dim / 2 are refused, naming the field.
    let bad = cfg.replace("[16, 24, 24]", "[16, 24, 16]");
    let e = Qwen2VlConfig::from_json(&bad).expect_err("bad sections");
    assert!(e.to_string().contains("mrope_section"), "{e}");
}

#[test]
fn more_image_tokens_than_images_is_refused() {
    let m = model();
    let g = golden(&m);
    let b = &m.backend;
    let px = b.upload(&g.pixel_values).expect("upload");
    // A second run of image tokens after the first image's, with only one image given.
    let mut ids = g.input_ids.clone();
    let img = m.model.cfg.image_token_id;
    let last = ids.len() - 1;
    ids.insert(last, img);
    let e = m
        .model
        .forward_prompt(b, &ids, Some(&px), &g.grids, None)
        .expect_err("extra image tokens");
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("2 run(s) of image tokens but 1 image(s)"),
        "{e}"
    );
    // One image token too many inside the image's run.
    let mut ids = g.input_ids.clone();
    let first = ids.iter().position(|&t| t == img).expect("image tokens");
    ids.insert(first, img);
    let e = m
        .model
        .forward_prompt(b, &ids, Some(&px), &g.grids, None)
        .expect_err("run too long");
    assert!(
        e.to_string().contains("13 image tokens but its grid"),
        "{e}"
    );
    // Image tokens and no image.
    let e = m
        .model
        .forward_prompt(b, &g.input_ids, None, &[], None)
        .expect_err("no image");
    assert!(
        e.to_string()
            .contains("1 run(s) of image tokens but 0 image(s)"),
        "{e}"
    );
}

#[test]
fn image_outside_the_processor_limits_is_refused() {
    let m = model();
    // Aspect ratio 300: transformers' smart_resize refuses it; so do we, as an image error.
    let img = image::RgbImage::new(600, 2);
    let e = preprocess(&img, &m.processor).expect_err("extreme aspect ratio");
    assert!(matches!(e, Error::Image(_)), "{e:?}");
    assert!(e.to_string().contains("aspect ratio"), "{e}");
    let e = m
        .inputs(&img, "what is it ?")
        .expect_err("same through inputs");
    assert!(matches!(e, Error::Image(_)), "{e:?}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = fixture();
    let read = |n: &str| std::fs::read(dir.join(n)).expect("read");
    let weights = read("model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&weights).expect("weights");
    let drop = "visual.merger.mlp.2.weight";
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != drop)
        .collect();
    let bytes = safetensors::serialize(kept, None).expect("serialize");
    let e = load_from_bytes_with(
        CpuBackend::new(),
        &read("config.json"),
        &read("tokenizer.json"),
        &bytes,
        None,
        Some(&read("preprocessor_config.json")),
        None,
    )
    .expect_err("missing tensor");
    assert!(
        matches!(&e, Error::MissingTensor { name } if name == drop),
        "{e:?}"
    );
}

/// A golden whose grid does not match its pixel rows is a golden error, not a panic.
#[test]
fn golden_with_wrong_grid_is_refused() {
    let m = model();
    let bytes = std::fs::read(fixture().join("golden.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden");
    let grid: Vec<u8> = [1i64, 6, 6].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "image_grid_thw")
        .collect();
    tensors.push((
        "image_grid_thw".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 3], &grid)
            .expect("view"),
    ));
    let out = safetensors::serialize(tensors, None).expect("serialize");
    let e = QwenGolden::from_bytes("bad.safetensors", &out, &m).expect_err("wrong grid");
    assert!(matches!(e, Error::Golden { .. }), "{e:?}");
    assert!(e.to_string().contains("pixel_values"), "{e}");
}

/// The answer path (greedy with the KV cache, Selector features) agrees with transformers'
/// greedy ids on the fixture, and its features are taken as for Idefics3.
#[test]
fn answer_matches_golden_ids_and_has_features() {
    let m = model();
    let g = golden(&m);
    let img = relvqa::model::image::decode_image(
        &std::fs::read(fixture().join("image.png")).expect("image"),
    )
    .expect("decode");
    let inputs = m
        .inputs(&img, g.meta("question").expect("question"))
        .expect("inputs");
    let gen = pollster::block_on(m.answer(&inputs, g.generated.len())).expect("answer");
    // The reference never produced <|im_end|> in its 8 steps, so the answer is cut there.
    assert_eq!(gen.tokens, g.generated);
    assert!(gen.truncated);
    assert!(gen.end_prob.is_some_and(|p| (0.0..=1.0).contains(&p)));
    let d = m.model.cfg.text.hidden_size;
    let f = &gen.features;
    assert_eq!(
        (
            f.image_pooled.len(),
            f.question_pooled.len(),
            f.answer_last.len()
        ),
        (d, d, d)
    );
    assert!(f
        .image_pooled
        .iter()
        .chain(&f.question_pooled)
        .all(|x| x.is_finite()));
    assert!(gen.maxprob() > 0.0 && gen.maxprob() <= 1.0);
}

/// `resize_pil` against Pillow 13's own output (tests/fixtures/resample, written with
/// `Image.resize`): bit for bit for BICUBIC (Qwen2-VL) and LANCZOS (Idefics3), for a
/// width-grows-height-shrinks shape (Pillow's vertical-first case) and both-ways shapes.
#[test]
fn pillow_resize_matches_bit_for_bit() {
    use relvqa::model::resample::{resize_pil, PilFilter};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resample");
    let load = |name: &str| {
        relvqa::model::image::decode_image(&std::fs::read(dir.join(name)).expect("read"))
            .expect("decode")
    };
    let input = load("in-26x30.png");
    for (name, filter) in [
        ("bicubic", PilFilter::Bicubic),
        ("lanczos", PilFilter::Lanczos),
    ] {
        for (w, h) in [(40u32, 21u32), (20, 21), (35, 41)] {
            let want = load(&format!("{name}-{w}x{h}.png"));
            let got = resize_pil(&input, w, h, filter).expect("resize");
            let worst = got
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            assert_eq!(
                worst, 0,
                "{name} 26x30 -> {w}x{h} differs by {worst} levels"
            );
        }
    }
}

/// HQQ on Qwen2-VL's language model through the same definition: the logits move away from
/// the float model's as the bit width falls, and 8 bits stay close. Only the language model's
/// 7 linears per layer are selected.
#[test]
fn hqq_quantizes_the_language_model_and_error_grows_as_bits_fall() {
    use relvqa::model::qwen2vl::loader::{is_language_linear, load_dir_with};
    let float = prompt_logits(&model());
    let mut errs = Vec::new();
    for bits in [8, 4, 2] {
        let m = load_dir_with(CpuBackend::new(), &fixture(), hqq(bits)).expect("load hqq");
        let l = prompt_logits(&m);
        assert!(l.iter().all(|x| x.is_finite()));
        errs.push(max_diff(&l, &float));
    }
    let scale = float.iter().fold(0f32, |a, x| a.max(x.abs()));
    eprintln!(
        "max |logit| {scale:.3}; max |Δlogit| vs float: 8-bit {:.3e}, 4-bit {:.3e}, 2-bit {:.3e}",
        errs[0], errs[1], errs[2]
    );
    assert!(
        errs[0] > 0.0,
        "8-bit HQQ changed nothing: were any weights quantized?"
    );
    assert!(errs[0] < errs[1] && errs[1] < errs[2], "{errs:?}");
    // Random N(0, 0.02) weights are HQQ's hardest case; at 8 bits (with the CPU kernels' int8
    // activations) the logits still stay within 5% of their range (measured 0.096 of 4.9).
    assert!(errs[0] < 0.05 * scale, "{errs:?} at scale {scale}");

    assert!(is_language_linear("model.layers.0.self_attn.q_proj.weight"));
    assert!(is_language_linear(
        "model.language_model.layers.1.mlp.down_proj.weight"
    ));
    assert!(!is_language_linear("visual.blocks.0.attn.qkv.weight"));
    assert!(!is_language_linear("model.visual.merger.mlp.0.weight"));
    assert!(!is_language_linear("lm_head.weight"));
    assert!(!is_language_linear("model.layers.0.input_layernorm.weight"));

    // A group that does not divide a linear's input is refused by name, not padded.
    let e = load_dir_with(
        CpuBackend::new(),
        &fixture(),
        Some((
            relvqa::quant::spec::QuantSpec::new(4, 64).expect("spec"),
            relvqa::quant::hqq::HqqOptions::default(),
        )),
    )
    .expect_err("group 64 does not divide 96");
    assert!(e.to_string().contains("down_proj"), "{e}");
}

/// The packed kernels on the GPU agree with the CPU's far more closely than quantization moves
/// the logits. They are not bit-equal: the CPU kernels round activations to int8 per 32 values
/// (src/quant/kernels/mod.rs), the GPU multiplies the dequantized weights in f32, so the GPU is
/// also the closer of the two to the float model.
#[test]
fn hqq_on_the_gpu_agrees_with_the_cpu() {
    use relvqa::model::qwen2vl::loader::load_dir_with;
    let float = prompt_logits(&model());
    let scale = float.iter().fold(0f32, |a, x| a.max(x.abs()));
    let cpu = prompt_logits(&load_dir_with(CpuBackend::new(), &fixture(), hqq(4)).expect("cpu"));
    let gpu =
        prompt_logits(&load_dir_with(common::gpu::gpu_backend(), &fixture(), hqq(4)).expect("gpu"));
    let (between, cpu_err, gpu_err) = (
        max_diff(&cpu, &gpu),
        max_diff(&cpu, &float),
        max_diff(&gpu, &float),
    );
    eprintln!(
        "4-bit HQQ, max |logit| {scale:.3}: GPU vs CPU {between:.3e}; vs float: CPU {cpu_err:.3e}, GPU {gpu_err:.3e}"
    );
    assert!(between < 0.25 * cpu_err, "{between} vs {cpu_err}");
    assert!(gpu_err < 1.2 * cpu_err, "{gpu_err} vs {cpu_err}");
}

/// `relvqa ask` answers with a Qwen2-VL checkpoint in the same JSON schema, with and without
/// load-time HQQ.
#[test]
fn cli_ask_answers_with_a_qwen2vl_checkpoint() {
    for extra in [&[][..], &["--hqq-bits", "4", "--hqq-group", "32"][..]] {
        ask_fixture_json(&fixture(), extra);
    }
}
