//! MBQ on Qwen2-VL, on the committed tiny fixture: the folds leave the float network's logits
//! unchanged (q/k/v biases included), the calibration measures what it should, and an MBQ
//! package builds through `relvqa quantize`, loads as `relvqa ask` loads it, and its logit
//! error is reported beside RTN's and HQQ's.

mod common;

use std::path::Path;
use std::process::Command;

use common::qwen2vl::{fixture, max_diff, prompt_logits};
use relvqa::backend::cpu::CpuBackend;
use relvqa::model::chat::ChatTemplate;
use relvqa::model::qwen2vl::loader::{load_dir, load_path};
use relvqa::package::{read_package_dir, Encoding, TensorData};
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::load_time::host_weights;
use relvqa::quant::mbq::{self, DecoderLayout, HostWeights, Qwen2VlSource};
use relvqa::quant::pipeline::{quantize_dir, QuantizeOptions};
use relvqa::quant::{Method, QuantSpec};

/// The fixture's files other than its weights, copied into a model directory.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "chat_template.json",
    "preprocessor_config.json",
];

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture().join(name)).expect("read fixture file")
}

/// The fixture's files as `relvqa quantize` reads them, for a [`Qwen2VlSource`] to borrow.
struct SourceFiles {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    weights: Vec<u8>,
    preprocessor: Vec<u8>,
    template: ChatTemplate,
}

impl SourceFiles {
    fn read() -> Self {
        Self {
            config: read("config.json"),
            tokenizer: read("tokenizer.json"),
            weights: read("model.safetensors"),
            preprocessor: read("preprocessor_config.json"),
            template: ChatTemplate::from_checkpoint(None, Some(&read("chat_template.json")))
                .expect("template")
                .expect("the fixture has a template"),
        }
    }

    fn source(&self) -> Qwen2VlSource<'_> {
        Qwen2VlSource::new(
            &self.config,
            &self.tokenizer,
            &self.weights,
            Some(self.template.clone()),
            Some(&self.preprocessor),
        )
        .expect("source")
    }
}

fn fixture_weights() -> HostWeights {
    host_weights(&read("model.safetensors"), "model.safetensors").expect("fixture weights")
}

/// A model directory at `dir` with the fixture's files, `config` as its config.json and `w`
/// as its (f32) weights.
fn write_model(dir: &Path, config: &[u8], w: &HostWeights) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for f in MODEL_FILES {
        std::fs::write(dir.join(f), read(f)).expect("copy");
    }
    std::fs::write(dir.join("config.json"), config).expect("config");
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), t.shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("view");
            (n.clone(), v)
        })
        .collect();
    let out = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(dir.join("model.safetensors"), out).expect("weights");
}

fn logits_of(dir: &Path) -> Vec<f32> {
    prompt_logits(&load_dir(CpuBackend::new(), dir).expect("load model dir"))
}

/// The fixture with as many key/value heads as query heads: each of its 2 key/value heads
/// repeated for the 2 query heads that share it, which is what grouped-query attention
/// computes, so the logits stay the same. Only then does MBQ fold v_proj -> o_proj, the one
/// fold whose previous op (v_proj) has a bias.
fn without_gqa() -> (Vec<u8>, HostWeights) {
    let mut cfg: serde_json::Value = serde_json::from_slice(&read("config.json")).expect("json");
    let t = &mut cfg["text_config"];
    let heads = t["num_attention_heads"].as_u64().expect("heads") as usize;
    let kv = t["num_key_value_heads"].as_u64().expect("kv heads") as usize;
    let head_dim = t["hidden_size"].as_u64().expect("hidden") as usize / heads;
    assert!(kv < heads, "the fixture should use grouped-query attention");
    t["num_key_value_heads"] = heads.into();
    let mut w = fixture_weights();
    for (name, t) in w.iter_mut() {
        let kv_proj = name.contains(".self_attn.k_proj.") || name.contains(".self_attn.v_proj.");
        if !kv_proj {
            continue;
        }
        // One head is `head_dim` rows of the weight (`head_dim * in` values) or of the bias.
        let per_head = t.data.len() / kv;
        let mut data = Vec::with_capacity(per_head * heads);
        for h in 0..heads {
            let src = h / (heads / kv);
            data.extend_from_slice(&t.data[src * per_head..(src + 1) * per_head]);
        }
        t.shape[0] = heads * head_dim;
        t.data = data;
    }
    (serde_json::to_vec(&cfg).expect("config"), w)
}

/// Deterministic scales in [0.4, 2.5]: far enough from 1 that a fold that misses any
/// parameter moves the logits well above rounding.
fn test_scales(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.4 + ((i * 37 + salt * 11) % 22) as f32 / 10.0)
        .collect()
}

/// Every MBQ fold of every layer (norm -> q,k,v; v -> o; norm -> gate,up; up -> down) with
/// non-trivial scales leaves the float network's logits where they were, within f32
/// rounding; and the same folds with v_proj's bias left unscaled do not — so this test is the
/// one that catches a missed bias.
#[test]
fn folding_scales_keeps_the_logits_biases_included() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let original = logits_of(&fixture());
    let (config, w) = without_gqa();
    write_model(&tmp.path().join("mha"), &config, &w);
    let mha = logits_of(&tmp.path().join("mha"));
    let scale = original.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "logits up to {scale:.2}; GQA expanded to MHA: max |Δlogit| {:.3e}",
        max_diff(&mha, &original)
    );
    assert!(max_diff(&mha, &original) < 1e-4);

    let layout = DecoderLayout {
        layers_prefix: "model.layers.",
        layers: 2,
        v_feeds_o: true,
    };
    let mut folded = w.clone();
    let mut without_bias = w.clone();
    let mut labels = Vec::new();
    for l in 0..layout.layers {
        for (k, g) in layout.groups(l, 1.0, 1.0).into_iter().enumerate() {
            let n = folded[&format!("{}.weight", g.linears[0])].shape[1];
            let s = test_scales(n, l * 4 + k);
            mbq::fold(&mut folded, &g, &s).expect("fold");
            mbq::fold(&mut without_bias, &g, &s).expect("fold");
            let bias = format!("{}.bias", g.prev);
            if let (Some(b), Some(b0)) = (without_bias.get_mut(&bias), w.get(&bias)) {
                b.data.clone_from(&b0.data);
            }
            labels.push(g.label);
        }
    }
    assert_eq!(labels.iter().filter(|l| **l == "v_proj->o_proj").count(), 2);
    write_model(&tmp.path().join("folded"), &config, &folded);
    write_model(&tmp.path().join("missed"), &config, &without_bias);
    let (exact, missed) = (
        max_diff(&logits_of(&tmp.path().join("folded")), &mha),
        max_diff(&logits_of(&tmp.path().join("missed")), &mha),
    );
    eprintln!("folded: max |Δlogit| {exact:.3e}; with v_proj's bias unscaled: {missed:.3e}");
    assert!(exact <= 1e-5 * scale.max(1.0), "{exact}");
    assert!(
        missed > 1e-2,
        "{missed}: the bias check would not catch a missed bias"
    );
}

/// The decoder layers' prefix follows the checkpoint's layout, so calibration records (and the
/// search folds into) transformers 5's `model.language_model.*` names as well as the hub's.
#[test]
fn layer_prefix_follows_the_checkpoint_layout() {
    use relvqa::model::qwen2vl::text_layers_prefix;
    let t5 = |n: &str| n == "model.language_model.embed_tokens.weight";
    assert_eq!(text_layers_prefix(t5), "model.language_model.layers.");
    assert_eq!(
        text_layers_prefix(|n| n == "model.embed_tokens.weight"),
        "model.layers."
    );
    let layout = DecoderLayout {
        layers_prefix: text_layers_prefix(t5),
        layers: 2,
        v_feeds_o: false,
    };
    assert_eq!(
        layout.parse("model.language_model.layers.1.self_attn.o_proj"),
        Some((1, "self_attn.o_proj"))
    );
    assert_eq!(layout.parse("model.visual.blocks.0.attn.proj"), None);
}

/// A fold whose scales do not match the op's channels is a typed error naming the tensor.
#[test]
fn fold_with_wrong_scale_count_names_the_tensor() {
    let mut w = fixture_weights();
    let layout = DecoderLayout {
        layers_prefix: "model.layers.",
        layers: 2,
        v_feeds_o: false,
    };
    let g = &layout.groups(0, 1.0, 1.0)[0];
    let e = mbq::fold(&mut w, g, &[1.0; 7]).expect_err("7 scales for 64 channels");
    assert!(e.to_string().contains("q_proj.weight"), "{e}");
}

fn mbq_options(calib: usize) -> QuantizeOptions {
    QuantizeOptions {
        method: Method::Mbq,
        spec: QuantSpec::new(4, 32).expect("spec"),
        calib,
        vision: false,
        hqq: HqqOptions::default(),
    }
}

/// The calibration sees every prompt's image tokens (4 per 64×64 shapes image after
/// `smart_resize`), and the modality split lines up with the rows: the last layer's outputs at
/// image positions reach only their own logits, which carry no loss, so their gradient (and
/// the last layer's measured ratio) is exactly 0, while earlier layers' are not.
#[test]
fn calibration_measures_the_ratios_on_the_right_rows() {
    let files = SourceFiles::read();
    let src = files.source();
    assert_eq!(
        mbq::CalibrationSource::layout(&src),
        DecoderLayout {
            layers_prefix: "model.layers.",
            layers: 2,
            v_feeds_o: false,
        }
    );
    let cal = mbq::calibrate(&src, 0, 6, |_| {}).expect("calibrate");
    let images = cal.vision.iter().filter(|v| **v).count();
    assert_eq!(images, 6 * 4);
    let q = &cal.inputs["model.layers.0.self_attn.q_proj"];
    assert_eq!(q.len(), cal.vision.len() * 64);
    assert_eq!(
        cal.inputs["model.layers.1.mlp.down_proj"].len(),
        cal.vision.len() * 96
    );
    eprintln!(
        "measured ratios: attn {:?}, mlp {:?}",
        cal.raw_attn, cal.raw_mlp
    );
    assert_eq!((cal.raw_attn[1], cal.raw_mlp[1]), (0.0, 0.0));
    assert!(cal.raw_attn[0] > 0.0 && cal.raw_mlp[0] > 0.0);
    assert!(cal.raw_attn[0].is_finite() && cal.raw_mlp[0].is_finite());
    // Floored at the median (the larger of two): what the search weighs vision error by.
    assert_eq!(cal.ratio_attn, vec![cal.raw_attn[0]; 2]);
}

/// `relvqa quantize --method mbq` on the fixture into `out`; its stdout.
fn quantize_cli(method: &str, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["quantize", "--model"])
        .arg(fixture())
        .args([
            "--method", method, "--bits", "4", "--group", "32", "--calib", "16",
        ])
        .arg("--out")
        .arg(out)
        .output()
        .expect("run relvqa");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// `relvqa quantize --method mbq --bits 4` builds a package that prints and records the
/// measured ratios and chosen scales, packs the language model's 14 linears as MBQ, and
/// loads the way `relvqa ask` loads it; its prompt logits stay near the float model's, and
/// its error is reported beside RTN's and HQQ's at the same bits.
#[test]
fn cli_mbq_package_builds_loads_and_reports_its_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = tmp.path().join("mbq");
    let stdout = quantize_cli("mbq", &pkg);
    assert!(
        stdout.contains("MBQ vision/text gradient ratio per layer, measured: attn ["),
        "{stdout}"
    );
    assert!(stdout.contains("floored at median"), "{stdout}");
    assert!(stdout.contains("input_layernorm->q,k,v"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pkg.join("quantize_report.json")).expect("report"))
            .expect("report json");
    let len = |k: &str| report[k].as_array().map_or(0, |a| a.len());
    assert_eq!(len("mbq_raw_ratio_attn"), 2, "{report}");
    assert_eq!(len("mbq_ratio_mlp"), 2, "{report}");
    assert_eq!(
        len("mbq_scales"),
        6,
        "3 groups a layer without v -> o: {report}"
    );

    let (manifest, _, tensors) = read_package_dir(&pkg).expect("read package");
    let packed: Vec<&str> = tensors
        .iter()
        .filter(|t| matches!(t.data, TensorData::Packed(_)))
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(packed.len(), 14, "{packed:?}");
    assert!(manifest.tensors.iter().any(|t| matches!(
        t.encoding,
        Encoding::Quant(q) if q.method == Method::Mbq && q.bits == 4 && q.group == 32
    )));

    let float = logits_of(&fixture());
    let err = |dir: &Path| {
        let l = prompt_logits(&load_path(CpuBackend::new(), dir, None).expect("package"));
        assert!(l.iter().all(|v| v.is_finite()), "{}", dir.display());
        let mean = l
            .iter()
            .zip(&float)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / l.len() as f32;
        (max_diff(&l, &float), mean)
    };
    quantize_cli("rtn", &tmp.path().join("rtn"));
    quantize_cli("hqq", &tmp.path().join("hqq"));
    let (e_mbq, e_rtn, e_hqq) = (
        err(&pkg),
        err(&tmp.path().join("rtn")),
        err(&tmp.path().join("hqq")),
    );
    eprintln!(
        "4-bit g32 prompt logits against f32, max |Δ| (mean |Δ|): MBQ {:.4} ({:.4}), RTN {:.4} ({:.4}), HQQ {:.4} ({:.4})",
        e_mbq.0, e_mbq.1, e_rtn.0, e_rtn.1, e_hqq.0, e_hqq.1
    );
    assert!(
        e_mbq.0 > 0.0,
        "a 4-bit package cannot equal the float model"
    );
}

/// The whole pipeline's folded float weights (`Quantized::scaled`, what MBQ rounded) give
/// the original float logits: every fold it chose is exact — on the fixture (grouped-query
/// attention: three groups a layer) and on its copy without GQA, where v_proj -> o_proj (and
/// so v_proj's bias) is folded too.
#[test]
fn pipeline_folds_are_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (config, w) = without_gqa();
    write_model(&tmp.path().join("mha"), &config, &w);
    for (dir, groups) in [(fixture(), 6), (tmp.path().join("mha"), 8)] {
        let q = quantize_dir(&dir, &mbq_options(8), |_, _, _| {}).expect("mbq");
        let s = &q.report.mbq_scales;
        assert_eq!(s.len(), groups, "{s:?}");
        assert!(
            s.iter().any(|s| s.alpha > 0.0),
            "no scale was folded: {s:?}"
        );
        let out = tmp.path().join(format!("folded{groups}"));
        write_model(
            &out,
            &std::fs::read(dir.join("config.json")).expect("config"),
            &q.scaled,
        );
        let d = max_diff(&logits_of(&out), &logits_of(&dir));
        let vo: Vec<f32> = s
            .iter()
            .filter(|s| s.group == "v_proj->o_proj")
            .map(|s| s.alpha)
            .collect();
        eprintln!(
            "{}: MBQ-folded float weights, max |Δlogit| {d:.3e}; v->o alphas {vo:?}",
            dir.display()
        );
        assert!(d < 1e-4, "{d}");
    }
}

/// MBQ's objective on calibration samples it never searched on: the modality-weighted output
/// error of every quantized linear, summed, is at most RTN's (as `tests/quant.rs` checks for
/// Idefics3), measured on each linear's recorded float inputs.
#[test]
fn mbq_output_error_is_at_most_rtn_on_held_out_samples() {
    let files = SourceFiles::read();
    let src = files.source();
    let held_out = mbq::calibrate(&src, 1_000_000, 16, |_| {}).expect("calibrate");
    let dev = candle_core::Device::Cpu;
    let vis: Vec<f32> = held_out.vision.iter().map(|&v| v as u8 as f32).collect();
    let vision = candle_core::Tensor::from_vec(vis, held_out.vision.len(), &dev).expect("mask");
    let rtn = quantize_dir(
        &fixture(),
        &QuantizeOptions {
            method: Method::Rtn,
            ..mbq_options(16)
        },
        |_, _, _| {},
    )
    .expect("rtn");
    let mbq_q = quantize_dir(&fixture(), &mbq_options(16), |_, _, _| {}).expect("mbq");
    let packed = |q: &relvqa::quant::pipeline::Quantized| {
        q.tensors
            .iter()
            .filter_map(|(n, t)| match t {
                relvqa::package::PackageTensor::Packed(p) => Some((n.clone(), p.clone())),
                _ => None,
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (pr, pm) = (packed(&rtn), packed(&mbq_q));
    assert_eq!(pr.len(), 14);
    let (mut er, mut em) = (0f32, 0f32);
    for (name, p_rtn) in &pr {
        let layer = name.trim_end_matches(".weight");
        let w0 = &rtn.scaled[name];
        let (rows, cols) = (w0.shape[0], w0.shape[1]);
        let t = |v: Vec<f32>| candle_core::Tensor::from_vec(v, (rows, cols), &dev).expect("t");
        let x = &held_out.inputs[layer];
        let x = candle_core::Tensor::from_slice(x, (x.len() / cols, cols), &dev).expect("x");
        let y = x.matmul(&t(w0.data.clone()).t().expect("t")).expect("y");
        let li: usize = layer
            .split('.')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .expect("layer index");
        let r = if layer.contains("self_attn") {
            held_out.ratio_attn[li]
        } else {
            held_out.ratio_mlp[li]
        };
        let err = |eff: Vec<f32>| {
            let yq = x.matmul(&t(eff).t().expect("t")).expect("yq");
            mbq::weighted_error(&yq, &y, &vision, r).expect("error")
        };
        er += err(p_rtn.dequantize());
        em += err(relvqa::quant::pipeline::effective_weight(
            &w0.data,
            &mbq_q.scaled[name].data,
            &pm[name],
        ));
    }
    eprintln!("held-out weighted output error, 14 linears: MBQ {em:.4}, RTN {er:.4}");
    assert!(em <= er, "MBQ output error {em} > RTN {er}");
}

/// An MBQ package runs on the GPU backend (wgpu; lavapipe here) too: its packed linears are
/// the same layout as RTN's, and the GPU agrees with the CPU as closely as for HQQ packages
/// (the CPU kernels round activations to int8, the GPU does not).
#[test]
fn mbq_package_runs_on_the_gpu() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = tmp.path().join("mbq");
    quantize_cli("mbq", &pkg);
    let gpu = prompt_logits(&load_path(common::gpu::gpu_backend(), &pkg, None).expect("gpu"));
    let cpu = prompt_logits(&load_path(CpuBackend::new(), &pkg, None).expect("cpu"));
    let float = logits_of(&fixture());
    let (between, cpu_err) = (max_diff(&gpu, &cpu), max_diff(&cpu, &float));
    eprintln!("MBQ package: GPU vs CPU max |Δlogit| {between:.3e}; CPU vs float {cpu_err:.3e}");
    assert!(between < 0.25 * cpu_err, "{between} vs {cpu_err}");
}
