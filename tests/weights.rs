//! Weights that reach the backend tensor by tensor (`model::weights`): the plan read from the
//! model definition, the sink's refusals, and that a model assembled from uploaded weights
//! answers exactly like one loaded from the checkpoint.

mod common;

use half::f16;
use relvqa::backend::cpu::CpuBackend;
use relvqa::model::idefics3::Idefics3Config;
use relvqa::model::loader::{load_from_bytes, load_from_sink};
use relvqa::model::weights::{ParamPlan, WeightSink};
use relvqa::package::{LoadedTensor, TensorData};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::load_time::{host_weights, hqq_sink, hqq_tensors};
use relvqa::quant::QuantSpec;

struct Default {
    cfg: Idefics3Config,
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    weights: Vec<u8>,
}

fn default_model() -> Default {
    let dir = common::default_model_dir();
    let config = std::fs::read(dir.join("config.json")).expect("config");
    let cfg = Idefics3Config::from_json(std::str::from_utf8(&config).expect("utf8")).expect("cfg");
    Default {
        cfg,
        config,
        tokenizer: std::fs::read(dir.join("tokenizer.json")).expect("tokenizer"),
        weights: std::fs::read(dir.join("model.safetensors")).expect("weights"),
    }
}

/// The checkpoint's tensors as a package would carry them (f16), in name order.
fn f16_tensors(weights: &[u8]) -> Vec<LoadedTensor> {
    host_weights(weights, "model.safetensors")
        .expect("decode")
        .into_iter()
        .map(|(name, t)| LoadedTensor {
            name,
            shape: t.shape,
            data: TensorData::F16(t.data.iter().map(|&v| f16::from_f32(v)).collect()),
        })
        .collect()
}

fn sink(m: &Default, tensors: &[LoadedTensor]) -> WeightSink<CpuBackend> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    WeightSink::for_model(CpuBackend::new(), &m.cfg, &|n| names.contains(&n)).expect("sink")
}

#[test]
fn the_plan_is_what_the_model_asks_for() {
    let m = default_model();
    let tensors = f16_tensors(&m.weights);
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let plan = ParamPlan::for_model(&m.cfg, &|n| names.contains(&n)).expect("plan");
    assert_eq!(
        plan.len(),
        tensors.len(),
        "every checkpoint tensor is asked for"
    );
    for t in &tensors {
        let p = plan.get(&t.name).expect("planned");
        assert_eq!(p.shape, t.shape, "{}", t.name);
    }
    let linear = |n: &str| plan.get(n).map(|p| p.linear);
    assert_eq!(
        linear("model.text_model.layers.0.self_attn.q_proj.weight"),
        Some(true)
    );
    assert_eq!(
        linear("model.text_model.layers.0.mlp.down_proj.weight"),
        Some(true)
    );
    assert_eq!(
        linear("model.text_model.layers.0.self_attn.q_proj.bias"),
        None
    );
    // Read by the embedding op and the conv reshape: these must stay f32 on the backend.
    assert_eq!(linear("model.text_model.embed_tokens.weight"), Some(false));
    assert_eq!(
        linear("model.vision_model.embeddings.patch_embedding.weight"),
        Some(false)
    );
    assert_eq!(linear("model.text_model.norm.weight"), Some(false));
}

#[test]
fn a_model_assembled_from_uploaded_weights_answers_like_the_checkpoint() {
    let m = default_model();
    let direct =
        load_from_bytes(CpuBackend::new(), &m.config, &m.tokenizer, &m.weights).expect("load");
    let tensors = f16_tensors(&m.weights);
    let mut s = sink(&m, &tensors);
    let n = tensors.len();
    for (i, t) in tensors.into_iter().rev().enumerate() {
        s.accept(t).expect("accept");
        assert_eq!(s.uploaded(), i + 1);
    }
    assert_eq!(s.expected(), n);
    let streamed = load_from_sink(s, &m.tokenizer).expect("assemble");
    for i in 0..3 {
        let q = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, i);
        let px = relvqa::model::image::image_to_pixels(&q.image, 64).expect("pixels");
        let a = pollster::block_on(direct.answer(&px, &q.question.text)).expect("answer");
        let b = pollster::block_on(streamed.answer(&px, &q.question.text)).expect("answer");
        assert_eq!(a, b, "question {i}");
    }
}

#[test]
fn the_sink_refuses_what_the_model_never_asks_for() {
    let m = default_model();
    let tensors = f16_tensors(&m.weights);
    let mut s = sink(&m, &tensors);
    let norm = tensors
        .iter()
        .find(|t| t.name == "model.text_model.norm.weight")
        .expect("norm")
        .clone();

    let mut stray = norm.clone();
    stray.name = "model.text_model.layers.99.extra.weight".into();
    let e = s.accept(stray).expect_err("unknown tensor");
    assert!(
        e.to_string().contains("not part of this architecture"),
        "{e}"
    );

    let mut wrong = norm.clone();
    wrong.shape = vec![wrong.shape[0] / 2, 2];
    let e = s.accept(wrong).expect_err("wrong shape");
    assert!(
        e.to_string().contains("model.text_model.norm.weight"),
        "{e}"
    );

    s.accept(norm.clone()).expect("accept");
    let e = s.accept(norm).expect_err("duplicate");
    assert!(e.to_string().contains("arrived twice"), "{e}");

    // A packed norm: only linear weights may be quantized.
    let q = hqq_tensors(
        &m.cfg,
        &m.weights,
        QuantSpec::new(4, 64).expect("spec"),
        &HqqOptions::default(),
        |_, _| {},
    )
    .expect("hqq");
    let packed = q
        .into_iter()
        .find(|t| matches!(t.data, TensorData::Packed(_)))
        .expect("a packed tensor");
    let mut p = packed.clone();
    p.name = "model.text_model.layers.0.input_layernorm.weight".into();
    let e = s.accept(p).expect_err("packed norm");
    assert!(
        e.to_string()
            .contains("model.text_model.layers.0.input_layernorm.weight"),
        "{e}"
    );

    // A missing tensor is named when the model is assembled.
    let e = load_from_sink(s, &m.tokenizer).expect_err("incomplete");
    assert!(e.to_string().contains("weight"), "{e}");
}

/// Quantizing tensor by tensor into the sink gives the same model as quantizing everything
/// first (the page's `loadQuantized` against the test above it in tests/quant.rs).
#[test]
fn hqq_into_the_sink_equals_hqq_collected() {
    let m = default_model();
    let spec = QuantSpec::new(4, 64).expect("spec");
    let o = HqqOptions::default();
    let mut calls = 0;
    let s = hqq_sink(CpuBackend::new(), &m.cfg, &m.weights, spec, &o, |_, _| {
        calls += 1
    })
    .expect("hqq sink");
    assert_eq!(calls, 4 * 7, "one progress call per language-model linear");
    let streamed = load_from_sink(s, &m.tokenizer).expect("assemble");
    let tensors = hqq_tensors(&m.cfg, &m.weights, spec, &o, |_, _| {}).expect("hqq");
    let collected = relvqa::model::loader::load_from_tensors(
        CpuBackend::new(),
        std::str::from_utf8(&m.config).expect("utf8"),
        &m.tokenizer,
        tensors,
    )
    .expect("load");
    let q = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, 0);
    let px = relvqa::model::image::image_to_pixels(&q.image, 64).expect("pixels");
    let a = pollster::block_on(streamed.answer(&px, &q.question.text)).expect("answer");
    let b = pollster::block_on(collected.answer(&px, &q.question.text)).expect("answer");
    assert_eq!(a, b);
}

/// The page's "quantize in the browser" on the streamed f16 package: each linear quantized by
/// `HqqStage` as it arrives gives the model `hqq_sink` builds from the checkpoint.
#[test]
fn hqq_on_a_stream_of_f16_tensors_equals_hqq_on_the_checkpoint() {
    use relvqa::quant::load_time::HqqStage;
    let m = default_model();
    let spec = QuantSpec::new(3, 64).expect("spec");
    let o = HqqOptions::default();
    let tensors = f16_tensors(&m.weights);
    let mut s = sink(&m, &tensors);
    let mut stage = HqqStage::new(&m.cfg, spec, o).expect("stage");
    for t in tensors {
        s.accept(stage.apply(t).expect("quantize")).expect("accept");
    }
    assert_eq!(stage.progress(), (4 * 7, 4 * 7));
    let streamed = load_from_sink(s, &m.tokenizer).expect("assemble");
    let whole = load_from_sink(
        hqq_sink(CpuBackend::new(), &m.cfg, &m.weights, spec, &o, |_, _| {}).expect("hqq"),
        &m.tokenizer,
    )
    .expect("assemble");
    let q = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, 1);
    let px = relvqa::model::image::image_to_pixels(&q.image, 64).expect("pixels");
    let a = pollster::block_on(streamed.answer(&px, &q.question.text)).expect("answer");
    let b = pollster::block_on(whole.answer(&px, &q.question.text)).expect("answer");
    assert_eq!(a, b);
}
