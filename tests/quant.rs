//! Quantization: packing round trips, the quantizers against each other on the shipped model,
//! byte budgets, and the bad inputs of the quantize path.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use relvqa::backend::cpu::CpuBackend;
use relvqa::model::idefics3::Idefics3Config;
use relvqa::model::loader::load_path;
use relvqa::model::tokenizer::VqaTokenizer;
use relvqa::package::{write_package, PackageTensor, MAX_SHARD_BYTES};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::mbq;
use relvqa::quant::packed::{pack_levels, unpack_levels};
use relvqa::quant::pipeline::{effective_weight, quantize_dir, QuantizeOptions, Quantized};
use relvqa::quant::{rtn, Method, PackedTensor, QuantSpec};

fn opts(method: Method, bits: u32, group: usize) -> QuantizeOptions {
    QuantizeOptions {
        method,
        spec: QuantSpec::new(bits, group).expect("spec"),
        calib: 64,
        vision: false,
        hqq: HqqOptions::default(),
    }
}

fn quantize_default(method: Method, bits: u32) -> Quantized {
    quantize_dir(
        &common::default_model_dir(),
        &opts(method, bits, 64),
        |_, _, _| {},
    )
    .expect("quantize default model")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Levels survive packing for every width, including 3-bit values that straddle words.
    #[test]
    fn pack_unpack_round_trips(bits in prop::sample::select(vec![8u32, 4, 3, 2]),
                               blocks in 1usize..6,
                               seed in any::<u64>()) {
        let n = blocks * 32;
        let max = (1u32 << bits) - 1;
        let levels: Vec<u8> = (0..n)
            .map(|i| ((seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64 * 1442695040888963407) >> 33) as u32 % (max + 1)) as u8)
            .collect();
        let mut words = vec![0u32; n / 32 * bits as usize];
        pack_levels(&levels, bits, &mut words);
        let mut back = vec![0u8; n];
        unpack_levels(&words, bits, &mut back);
        prop_assert_eq!(levels, back);
    }

    /// A packed tensor's levels and dequantized values are within half a step of the weight.
    #[test]
    fn rtn_error_is_at_most_half_a_step(bits in prop::sample::select(vec![8u32, 4, 3, 2]),
                                        group in prop::sample::select(vec![32usize, 64, 128]),
                                        w in prop::collection::vec(-2.0f32..2.0, 256)) {
        let spec = QuantSpec::new(bits, group).expect("spec");
        let p = rtn::quantize("w", &w, 2, 128, spec).expect("quantize");
        prop_assert_eq!(p.levels().len(), 256);
        let d = p.dequantize();
        for (g, (wg, dg)) in w.chunks(group).zip(d.chunks(group)).enumerate() {
            let step = p.scales[g].to_f32();
            for (a, b) in wg.iter().zip(dg) {
                // Half a step, plus f16 rounding of the scale and zero.
                prop_assert!((a - b).abs() <= 0.5 * step + 0.01 * step * (1u32 << bits) as f32 + 1e-3,
                    "w {a} -> {b}, step {step}");
            }
        }
    }
}

/// HQQ's mean |W - Ŵ| is no larger than RTN's on every quantized layer of the real model.
#[test]
fn hqq_weight_error_is_at_most_rtn_on_the_default_model() {
    for bits in [4, 3, 2] {
        let r = quantize_default(Method::Rtn, bits).report;
        let h = quantize_default(Method::Hqq, bits).report;
        let (mut sr, mut sh) = (0.0, 0.0);
        for (lr, lh) in r.layers.iter().zip(&h.layers) {
            assert_eq!(lr.name, lh.name);
            assert!(
                lh.mean_abs <= lr.mean_abs * (1.0 + 1e-3),
                "{bits}-bit {}: hqq {} > rtn {}",
                lr.name,
                lh.mean_abs,
                lr.mean_abs
            );
            sr += lr.mean_abs;
            sh += lh.mean_abs;
        }
        assert!(
            sh < sr,
            "{bits}-bit: HQQ should improve on RTN overall ({sh} vs {sr})"
        );
    }
}

fn load_config_and_tok() -> (Idefics3Config, VqaTokenizer, Vec<u8>) {
    let dir = common::default_model_dir();
    let cfg = Idefics3Config::from_json(
        &std::fs::read_to_string(dir.join("config.json")).expect("config"),
    )
    .expect("parse config");
    let tok = VqaTokenizer::from_bytes(&std::fs::read(dir.join("tokenizer.json")).expect("tok"))
        .expect("tokenizer");
    let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
    (cfg, tok, weights)
}

/// MBQ's objective, measured on calibration samples it never searched on: the
/// modality-weighted output error of every quantized linear, summed, is at most RTN's.
#[test]
fn mbq_output_error_is_at_most_rtn_on_held_out_samples() {
    let (cfg, tok, weights) = load_config_and_tok();
    let held_out = mbq::calibrate(
        &mbq::Idefics3Source::new(&cfg, &tok, &weights),
        1_000_000,
        48,
        |_| {},
    )
    .expect("calib");
    let dev = candle_core::Device::Cpu;
    let vis: Vec<f32> = held_out.vision.iter().map(|&v| v as u8 as f32).collect();
    let vision = candle_core::Tensor::from_vec(vis, held_out.vision.len(), &dev).expect("mask");
    for bits in [4, 3] {
        let rtn = quantize_default(Method::Rtn, bits);
        let mbq = quantize_default(Method::Mbq, bits);
        let original = rtn.scaled.clone();
        let packed = |q: &Quantized| -> BTreeMap<String, PackedTensor> {
            q.tensors
                .iter()
                .filter_map(|(n, t)| match t {
                    PackageTensor::Packed(p) => Some((n.clone(), p.clone())),
                    _ => None,
                })
                .collect()
        };
        let (pr, pm) = (packed(&rtn), packed(&mbq));
        let (mut er, mut em) = (0f32, 0f32);
        for (name, p_rtn) in &pr {
            let layer = name.trim_end_matches(".weight");
            let x = &held_out.inputs[layer];
            let w0 = &original[name];
            let (rows, cols) = (w0.shape[0], w0.shape[1]);
            let t = |v: Vec<f32>| candle_core::Tensor::from_vec(v, (rows, cols), &dev).expect("t");
            let x = candle_core::Tensor::from_slice(x, (x.len() / cols, cols), &dev).expect("x");
            let y = x.matmul(&t(w0.data.clone()).t().expect("t")).expect("y");
            let r = if layer.contains("self_attn") {
                &held_out.ratio_attn
            } else {
                &held_out.ratio_mlp
            };
            let li: usize = layer
                .split('.')
                .nth(3)
                .and_then(|s| s.parse().ok())
                .expect("layer index");
            let err = |eff: Vec<f32>| {
                let yq = x.matmul(&t(eff).t().expect("t")).expect("yq");
                mbq::weighted_error(&yq, &y, &vision, r[li]).expect("err")
            };
            er += err(p_rtn.dequantize());
            em += err(effective_weight(
                &w0.data,
                &mbq.scaled[name].data,
                &pm[name],
            ));
        }
        assert!(em <= er, "{bits}-bit: MBQ output error {em} > RTN {er}");
    }
}

/// Language-model bytes (every text_model tensor, embeddings and norms included) against f16.
#[test]
fn language_model_bytes_meet_the_budget() {
    for (bits, max) in [(4, 0.30), (3, 0.23), (2, 0.17)] {
        let r = quantize_default(Method::Rtn, bits).report;
        let ratio = r.lm_bytes as f64 / r.lm_f16_bytes as f64;
        assert!(ratio <= max, "{bits}-bit: LM bytes {ratio:.4}x f16 > {max}");
    }
}

#[test]
fn unsupported_bits_and_groups_are_refused() {
    let e = QuantSpec::new(5, 64).expect_err("5 bits");
    assert!(e.to_string().contains("5 bits is not supported"), "{e}");
    let e = QuantSpec::new(4, 48).expect_err("group 48");
    assert!(e.to_string().contains("group size 48"), "{e}");
}

/// The default model's down_proj has K = 320, which 128 does not divide: refused by name.
#[test]
fn a_group_that_does_not_divide_k_is_refused_naming_the_layer() {
    let e = quantize_dir(
        &common::default_model_dir(),
        &opts(Method::Hqq, 4, 128),
        |_, _, _| {},
    )
    .err()
    .expect("g128 must be refused");
    let m = e.to_string();
    assert!(
        m.contains("down_proj") && m.contains("320") && m.contains("refuses rather than pads"),
        "{m}"
    );
}

#[test]
fn non_finite_weights_are_refused() {
    let mut w = vec![0.5f32; 64];
    w[7] = f32::NAN;
    let e = rtn::quantize(
        "layer.weight",
        &w,
        1,
        64,
        QuantSpec::new(4, 64).expect("spec"),
    )
    .expect_err("NaN");
    assert!(e.to_string().contains("index 7 is not finite"), "{e}");
}

/// A package answers like its model, and one carrying a tensor the architecture does not know
/// is refused by name.
#[test]
fn packages_load_and_unknown_tensors_are_refused() {
    let q = quantize_default(Method::Hqq, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    write_package(
        dir.path(),
        &q.config,
        &q.tokenizer,
        q.tensors.clone(),
        MAX_SHARD_BYTES,
    )
    .expect("write");
    let vqa = load_path(CpuBackend::new(), dir.path()).expect("load package");
    let f16 = load_path(CpuBackend::new(), &common::default_model_dir()).expect("load f16");
    let s = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, 3);
    let side = f16.model.cfg.vision_config.image_size;
    let px = relvqa::model::image::image_to_pixels(&s.image, side).expect("pixels");
    let a = pollster::block_on(vqa.answer(&px, &s.question.text)).expect("answer");
    let b = pollster::block_on(f16.answer(&px, &s.question.text)).expect("answer");
    assert_eq!(a.text, b.text, "8-bit HQQ should answer like f16 here");
    let pa = a.maxprob();
    let pb = b.maxprob();
    assert!((pa - pb).abs() < 0.02, "8-bit confidence {pa} vs f16 {pb}");

    let mut tensors = q.tensors;
    tensors.push((
        "model.text_model.layers.99.mlp.extra.weight".into(),
        PackageTensor::Float {
            shape: vec![2],
            data: vec![half::f16::ONE; 2],
        },
    ));
    let dir2 = tempfile::tempdir().expect("tempdir");
    write_package(
        dir2.path(),
        &q.config,
        &q.tokenizer,
        tensors,
        MAX_SHARD_BYTES,
    )
    .expect("write");
    let Err(e) = load_path(CpuBackend::new(), dir2.path()) else {
        panic!("a package with an unknown tensor must be refused");
    };
    assert!(e.to_string().contains("layers.99.mlp.extra.weight"), "{e}");
}

/// HQQ at load time (what the page does for a bit width it has no package for) gives exactly
/// the model `relvqa quantize --method hqq` writes: bit-identical logits.
#[test]
fn hqq_at_load_time_equals_the_hqq_package() {
    use relvqa::model::loader::load_from_tensors;
    use relvqa::quant::load_time::hqq_tensors;
    let dir = common::default_model_dir();
    let config = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let tokenizer = std::fs::read(dir.join("tokenizer.json")).expect("tokenizer");
    let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let cfg = relvqa::model::idefics3::Idefics3Config::from_json(&config).expect("cfg");
    for bits in [4u32, 2] {
        let spec = QuantSpec::new(bits, 64).expect("spec");
        let mut calls = 0;
        let tensors = hqq_tensors(&cfg, &weights, spec, &HqqOptions::default(), |d, n| {
            calls += 1;
            assert!(d <= n);
        })
        .expect("quantize in memory");
        assert_eq!(calls, 4 * 7, "one progress call per language-model linear");
        let mem = load_from_tensors(CpuBackend::new(), &config, &tokenizer, tensors).expect("load");
        let q = quantize_default(Method::Hqq, bits);
        let pkg = tempfile::tempdir().expect("tempdir");
        write_package(
            pkg.path(),
            &q.config,
            &q.tokenizer,
            q.tensors,
            MAX_SHARD_BYTES,
        )
        .expect("write");
        let disk = load_path(CpuBackend::new(), pkg.path()).expect("load package");
        for i in 0..3 {
            let s = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, i);
            let px = relvqa::model::image::image_to_pixels(&s.image, 64).expect("pixels");
            let a = pollster::block_on(mem.answer(&px, &s.question.text)).expect("answer");
            let b = pollster::block_on(disk.answer(&px, &s.question.text)).expect("answer");
            assert_eq!(a, b, "int{bits} question {i}");
        }
    }
}
