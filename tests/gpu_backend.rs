//! The wgpu [`Backend`] against the CPU backend: every trait op on seeded random inputs (shapes
//! off the tile and group sizes, `relvqa::backend::parity`), weights split across storage
//! bindings, then the whole default model — logits for f16 and every bit width, and greedy
//! answers on the first 200 test questions.
//!
//! Like tests/gpu_kernels.rs these FAIL without a GPU adapter (lavapipe:
//! `apt-get install mesa-vulkan-drivers`).

mod common;

use common::gpu::{check_tol, gpu_backend, gpu_backend_with, rand_vec, rng};
use relvqa::backend::cpu::CpuBackend;
use relvqa::backend::parity::op_parity;
use relvqa::backend::wgpu::{GpuOptions, WgpuBackend};
use relvqa::backend::{Backend, HostTensor};
use relvqa::eval::shapes::{self, Split};
use relvqa::model::generate::Vqa;
use relvqa::model::image::image_to_pixels;
use relvqa::model::loader::{load_dir, load_path};
use relvqa::package::{write_package, MAX_SHARD_BYTES};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::pipeline::{quantize_dir, QuantizeOptions};
use relvqa::quant::{Method, QuantSpec};
use relvqa::{Error, GpuErrorKind};

const TOL: f32 = 1e-4;

/// The default backend (subgroup reductions where the adapter has them, as lavapipe does) and
/// one forced onto the workgroup-memory reductions every adapter has (SwiftShader's path).
fn both_reduction_paths() -> Vec<WgpuBackend> {
    let with = gpu_backend();
    println!(
        "adapter {}: subgroup reductions {}",
        with.context().info().adapter,
        with.context().uses_subgroups()
    );
    let without = gpu_backend_with(&GpuOptions {
        no_subgroups: true,
        ..GpuOptions::default()
    });
    assert!(!without.context().uses_subgroups());
    vec![with, without]
}

fn host(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(shape.to_vec(), rand_vec(&mut rng(seed), n, -1.0, 1.0)).expect("host")
}

/// Every op of the backend trait against the CPU on both reduction paths: the checks of
/// `relvqa::backend::parity`, which the page also runs on Chromium's WebGPU (tests/e2e).
#[test]
fn every_op_matches_cpu_on_both_reduction_paths() {
    for g in &both_reduction_paths() {
        let checks = pollster::block_on(op_parity(g)).expect("parity run");
        assert!(checks.len() > 30, "only {} checks", checks.len());
        for c in &checks {
            println!("{}: max relative error {:.2e}", c.name, c.rel_err);
        }
        let bad: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
        assert!(bad.is_empty(), "over tolerance: {bad:?}");
    }
}

#[test]
fn shapes_that_do_not_broadcast_are_an_error() {
    let g = gpu_backend();
    let bad = g.add(
        &g.upload(&host(&[2, 3], 8)).expect("up"),
        &g.upload(&host(&[2], 9)).expect("up"),
    );
    assert!(bad.is_err(), "shapes that do not broadcast are an error");
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    let g = gpu_backend();
    let gt = g.upload(&host(&[53, 20], 1)).expect("table");
    let e = g
        .embedding(&g.upload_ids(&[3, 53], &[2]).expect("ids"), &gt)
        .expect_err("id past the vocabulary");
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
}

/// A linear weight from an f16 checkpoint stays f16 on the GPU (half the bytes), widened inside
/// the GEMV and GEMM kernels: it matches the CPU on the same f16-rounded values, whole or split.
#[test]
fn half_weights_split_across_bindings_match_cpu() {
    let cpu = CpuBackend::new();
    let small = gpu_backend_with(&GpuOptions {
        max_storage_binding: Some(16 << 10),
        ..GpuOptions::default()
    });
    // Unsplit half weights are in `op_parity`; here they are split too.
    for g in [small] {
        for (m, n, k) in [(1, 300, 48), (7, 300, 48), (2, 300, 40)] {
            let mut w = host(&[n, k], 21);
            for v in &mut w.data {
                *v = half::f16::from_f32(*v).to_f32();
            }
            let x = host(&[m, k], 22);
            let gw = g.upload_half_weight(&w).expect("half upload");
            assert_eq!(
                pollster::block_on(g.read_f32(&gw)).expect("read").data,
                w.data
            );
            let want = pollster::block_on(
                cpu.read_f32(
                    &cpu.linear(
                        &cpu.upload(&x).expect("x"),
                        &cpu.upload(&w).expect("w"),
                        None,
                    )
                    .expect("cpu"),
                ),
            )
            .expect("read");
            let got = pollster::block_on(
                g.read_f32(&g.linear(&g.upload(&x).expect("x"), &gw, None).expect("gpu")),
            )
            .expect("read");
            check_tol(
                &format!("half linear m={m} n={n} k={k} parts={}", gw.parts()),
                &got.data,
                &want.data,
                TOL,
            );
        }
    }
}

/// f16 values straight from a package (`upload_f16`, converted a slice at a time) give exactly
/// what uploading them widened to f32 gives: as f32 tensors and as half weights, whole and
/// split across bindings, larger than one conversion slice (4 MiB), odd lengths included.
#[test]
fn f16_uploads_equal_widened_f32_uploads() {
    let small = gpu_backend_with(&GpuOptions {
        max_storage_binding: Some(16 << 10),
        ..GpuOptions::default()
    });
    let small_shapes = vec![vec![7usize], vec![3, 5], vec![300, 48]];
    // 1100 x 1024 values: more than one 4 MiB conversion slice of f32.
    let whole_shapes = vec![vec![7usize], vec![3, 5], vec![1100, 1024]];
    for (g, shapes) in [(gpu_backend(), whole_shapes), (small, small_shapes)] {
        for shape in shapes {
            let n: usize = shape.iter().product();
            let v: Vec<half::f16> = rand_vec(&mut rng(31), n, -2.0, 2.0)
                .into_iter()
                .map(half::f16::from_f32)
                .collect();
            let wide = HostTensor::new(shape.clone(), v.iter().map(|x| x.to_f32()).collect())
                .expect("host");
            for weight in [false, true] {
                let got = g.upload_f16(&shape, &v, weight).expect("upload_f16");
                let want = if weight {
                    g.upload_half_weight(&wide).expect("half")
                } else {
                    g.upload(&wide).expect("f32")
                };
                assert_eq!(got.parts(), want.parts(), "{shape:?} weight={weight}");
                let read = |t| pollster::block_on(g.read_f32(t)).expect("read").data;
                assert_eq!(read(&got), wide.data, "{shape:?} weight={weight}");
                assert_eq!(read(&want), wide.data, "{shape:?} weight={weight}");
            }
        }
    }
    let g = gpu_backend();
    assert!(g.upload_f16(&[2, 3], &[half::f16::ZERO; 5], false).is_err());
}

/// A device whose storage bindings are capped below the weights' size: the backend splits
/// them by rows, and linear layers and embeddings still match the CPU.
#[test]
fn tensors_over_the_binding_limit_are_split_not_refused() {
    let g = gpu_backend_with(&GpuOptions {
        max_storage_binding: Some(16 << 10),
        ..GpuOptions::default()
    });
    assert_eq!(
        g.context().info().limits.max_storage_buffer_binding_size,
        16 << 10,
        "the device should enforce the capped limit"
    );
    let w = host(&[300, 64], 1); // 75 KiB: five parts of at most 16 KiB
    let gw = g.upload(&w).expect("split upload");
    assert!(gw.parts() > 1, "a 75 KiB weight must be split at 16 KiB");
    let cpu = CpuBackend::new();
    // Outputs must fit one binding too: [10, 300] is 12 KiB.
    for m in [1, 10] {
        let x = host(&[m, 64], 2);
        let want = pollster::block_on(
            cpu.read_f32(
                &cpu.linear(
                    &cpu.upload(&x).expect("x"),
                    &cpu.upload(&w).expect("w"),
                    None,
                )
                .expect("cpu"),
            ),
        )
        .expect("read");
        let got = pollster::block_on(
            g.read_f32(&g.linear(&g.upload(&x).expect("x"), &gw, None).expect("gpu")),
        )
        .expect("read");
        check_tol(&format!("split linear m={m}"), &got.data, &want.data, TOL);
    }
    let ids = [299u32, 0, 150, 64];
    let want = pollster::block_on(
        cpu.read_f32(
            &cpu.embedding(
                &cpu.upload_ids(&ids, &[4]).expect("ids"),
                &cpu.upload(&w).expect("w"),
            )
            .expect("cpu"),
        ),
    )
    .expect("read");
    let got = pollster::block_on(
        g.read_f32(
            &g.embedding(&g.upload_ids(&ids, &[4]).expect("ids"), &gw)
                .expect("gpu"),
        ),
    )
    .expect("read");
    check_tol("split embedding", &got.data, &want.data, 0.0);
    let whole = pollster::block_on(g.read_f32(&gw)).expect("read split");
    assert_eq!(whole.data, w.data, "a split tensor reads back whole");
    let e = g
        .softmax_last(&gw)
        .expect_err("split tensors only go to linear/embedding");
    assert!(
        matches!(
            e,
            Error::Gpu {
                kind: GpuErrorKind::LimitExceeded,
                ..
            }
        ),
        "{e}"
    );
}

/// Last-position logits and final hidden states of `vqa` for a few test questions.
fn prefill_outputs<B: Backend>(vqa: &Vqa<B>, n: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let b = &vqa.backend;
    let side = vqa.model.cfg.vision_config.image_size;
    (0..n)
        .map(|i| {
            let s = shapes::sample(Split::Test, i as u64);
            let px = b
                .upload(&image_to_pixels(&s.image, side).expect("pixels"))
                .expect("upload");
            let prompt = vqa.prompt(&s.question.text).expect("prompt");
            let h = vqa
                .model
                .forward_hidden(b, &prompt.ids, 1, Some(&px), None)
                .expect("forward");
            let last = b.narrow(&h, 1, prompt.ids.len() - 1, 1).expect("narrow");
            let logits = vqa.model.logits(b, &last).expect("logits");
            (
                pollster::block_on(b.read_f32(&logits)).expect("read").data,
                pollster::block_on(b.read_f32(&h)).expect("read").data,
            )
        })
        .collect()
}

fn package_of(method: Method, bits: u32) -> tempfile::TempDir {
    let q = quantize_dir(
        &common::default_model_dir(),
        &QuantizeOptions {
            method,
            spec: QuantSpec::new(bits, 64).expect("spec"),
            calib: 32,
            vision: false,
            hqq: HqqOptions::default(),
        },
        |_, _, _| {},
    )
    .expect("quantize");
    let dir = tempfile::tempdir().expect("tempdir");
    write_package(
        dir.path(),
        &q.config,
        &q.tokenizer,
        q.tensors,
        MAX_SHARD_BYTES,
    )
    .expect("write");
    dir
}

/// `tol` is relative to the largest logit; the argmax must agree.
fn compare_model(name: &str, cpu: &Vqa<CpuBackend>, gpu: &Vqa<WgpuBackend>, tol: f32) {
    let want = prefill_outputs(cpu, 3);
    let got = prefill_outputs(gpu, 3);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    for (i, ((gl, gh), (wl, wh))) in got.iter().zip(&want).enumerate() {
        check_tol(&format!("{name} q{i} logits"), gl, wl, tol);
        check_tol(&format!("{name} q{i} hidden"), gh, wh, tol);
        assert_eq!(
            argmax(gl),
            argmax(wl),
            "{name} q{i}: a different next token"
        );
    }
}

/// f16 agrees to float noise. Quantized variants differ by the CPU kernel's int8 activation
/// rounding alone, since both backends read the same packed weights.
#[test]
fn default_model_logits_match_cpu_for_f16_and_every_bit_width() {
    let g = gpu_backend();
    let dir = common::default_model_dir();
    compare_model(
        "f16",
        &load_dir(CpuBackend::new(), &dir).expect("cpu"),
        &load_dir(g.clone(), &dir).expect("gpu"),
        1e-4,
    );
    for (method, bits) in [
        (Method::Hqq, 8),
        (Method::Mbq, 4),
        (Method::Hqq, 3),
        (Method::Hqq, 2),
    ] {
        let pkg = package_of(method, bits);
        compare_model(
            &format!("{method:?} int{bits}"),
            &load_path(CpuBackend::new(), pkg.path()).expect("cpu"),
            &load_path(g.clone(), pkg.path()).expect("gpu"),
            // The CPU's packed kernel rounds activations to int8 per 32 values; the GPU's does
            // not. Measured on the model shipped 2026-11-28: logits within 5.4e-3 and final
            // hidden states within 2.3e-2 of their scale (one question, int8; the others
            // 0.6-1.9e-2), the next token always the same (asserted above). The previous model's
            // states stayed under 2e-2.
            4e-2,
        );
    }
}

/// The acceptance check of the issue: identical greedy answers on the first 200 test
/// questions, and MaxProb within float noise.
#[test]
fn greedy_answers_match_cpu_on_200_test_questions() {
    let dir = common::default_model_dir();
    let cpu = load_dir(CpuBackend::new(), &dir).expect("cpu");
    let gpu = load_dir(gpu_backend(), &dir).expect("gpu");
    let side = cpu.model.cfg.vision_config.image_size;
    let mut worst = 0f32;
    for i in 0..200u64 {
        let s = shapes::sample(Split::Test, i);
        let px = image_to_pixels(&s.image, side).expect("pixels");
        let a = pollster::block_on(cpu.answer(&px, &s.question.text)).expect("cpu answer");
        let b = pollster::block_on(gpu.answer(&px, &s.question.text)).expect("gpu answer");
        assert_eq!(a.text, b.text, "question {i}: {:?}", s.question.text);
        worst = worst.max((a.maxprob() - b.maxprob()).abs());
    }
    println!("200 answers equal; max |MaxProb difference| {worst:.2e}");
    assert!(worst < 1e-3, "MaxProb differs by {worst}");
}

/// Destroying the device mid-session turns the next answer into a typed `DeviceLost` error
/// (what the web page falls back to the CPU on), not a panic or a hang.
#[test]
fn a_lost_device_fails_the_next_answer_with_a_typed_error() {
    let gpu = load_dir(gpu_backend(), &common::default_model_dir()).expect("gpu");
    let s = shapes::sample(Split::Test, 0);
    let px = image_to_pixels(&s.image, 64).expect("pixels");
    pollster::block_on(gpu.answer(&px, &s.question.text)).expect("answer before the loss");
    gpu.backend.context().destroy();
    let e = pollster::block_on(gpu.answer(&px, &s.question.text)).expect_err("device is gone");
    assert!(
        matches!(
            e,
            Error::Gpu {
                kind: GpuErrorKind::DeviceLost,
                ..
            }
        ),
        "{e}"
    );
}

/// `relvqa ask --backend gpu --json` gives the CPU's answer, confidence and decision on test
/// images (the default model with its Selector and calibration).
#[test]
fn ask_backend_gpu_equals_cpu_on_test_images() {
    let d = tempfile::tempdir().expect("tempdir");
    for i in 0..4u64 {
        let s = shapes::sample(Split::Test, i);
        let img = d.path().join(format!("q{i}.png"));
        s.image.save(&img).expect("png");
        let cpu = common::ask_json(None, &img, &s.question.text, &[]);
        let gpu = common::ask_json(None, &img, &s.question.text, &["--backend", "gpu"]);
        assert_eq!(gpu["backend"], "wgpu");
        assert_eq!(cpu["backend"], "cpu");
        for k in ["answer", "abstain", "confidence_source", "threshold"] {
            assert_eq!(gpu[k], cpu[k], "question {i}: {k}");
        }
        for k in ["confidence", "maxprob"] {
            let (g, c) = (gpu[k].as_f64(), cpu[k].as_f64());
            let close = match (g, c) {
                (Some(g), Some(c)) => (g - c).abs() < 1e-4,
                _ => g == c,
            };
            assert!(close, "question {i}: {k} {g:?} vs {c:?}");
        }
    }
}
