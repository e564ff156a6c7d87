//! `Qwen2VLConfig` as Hugging Face transformers reads it
//! (`src/transformers/models/qwen2_vl/configuration_qwen2_vl.py`), in both layouts that exist:
//!
//! - transformers >= 5 writes the decoder under `text_config`, with RoPE in
//!   `text_config.rope_parameters` (`rope_theta`, `rope_type`, `mrope_section`);
//! - the checkpoints on the hub (Qwen2-VL-2B/7B-Instruct, transformers 4) keep the decoder's
//!   fields at the top level, with `rope_theta` beside them and
//!   `rope_scaling: {"type": "mrope", "mrope_section": [16, 24, 24]}`.
//!
//! Both parse into the same [`Qwen2VlConfig`]; anything the model would run differently from
//! transformers (sliding-window attention, another activation, sections that do not cover the
//! rotary half) is refused here with the field's name.

use serde::Deserialize;

use crate::error::{Error, Result};

/// The vision tower (`Qwen2VLVisionConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub embed_dim: usize,
    /// The merger's output width: the language model's hidden size.
    pub hidden_size: usize,
    pub hidden_act: String,
    pub mlp_ratio: f64,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    /// Base of the 2-D rotary embedding (`rope_parameters.rope_theta`, 10000 by default).
    pub rope_theta: f64,
}

/// The Qwen2 decoder (`Qwen2VLTextConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Rotary frequencies given to the temporal, height and width position, in that order;
    /// they sum to `head_dim / 2`.
    pub mrope_section: [usize; 3],
    pub eos_token_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub image_token_id: u32,
    pub video_token_id: Option<u32>,
    pub vision_start_token_id: Option<u32>,
    pub vision_end_token_id: Option<u32>,
    pub tie_word_embeddings: bool,
}

impl TextConfig {
    /// transformers' `Qwen2VLAttention` derives it (`hidden_size // num_heads`) and checks
    /// that it divides; a `head_dim` field is not read.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads.max(1)
    }
    /// `int(embed_dim * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
    /// Values in one flattened patch: `channels * temporal * patch * patch`.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Width of a merged token before the merger's MLP.
    pub fn merged_dim(&self) -> usize {
        self.embed_dim * self.spatial_merge_size * self.spatial_merge_size
    }
}

#[derive(Deserialize)]
struct RawVision {
    #[serde(default = "d_depth")]
    depth: usize,
    #[serde(default = "d_embed")]
    embed_dim: usize,
    #[serde(default = "d_vhidden")]
    hidden_size: usize,
    #[serde(default = "d_quick_gelu")]
    hidden_act: String,
    #[serde(default = "d_mlp_ratio")]
    mlp_ratio: f64,
    #[serde(default = "d_vheads")]
    num_heads: usize,
    /// transformers >= 5; the hub's configs say `in_chans`.
    #[serde(default)]
    in_channels: Option<usize>,
    #[serde(default)]
    in_chans: Option<usize>,
    #[serde(default = "d_patch")]
    patch_size: usize,
    #[serde(default = "d_two")]
    spatial_merge_size: usize,
    #[serde(default = "d_two")]
    temporal_patch_size: usize,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "d_silu")]
    hidden_act: String,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
}

fn d_depth() -> usize {
    32
}
fn d_embed() -> usize {
    1280
}
fn d_vhidden() -> usize {
    3584
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_vheads() -> usize {
    16
}
fn d_patch() -> usize {
    14
}
fn d_two() -> usize {
    2
}
fn d_max_pos() -> usize {
    32768
}
fn d_eps() -> f64 {
    1e-5
}
fn d_silu() -> String {
    "silu".into()
}

/// Caps on what a config may ask us to allocate (far above Qwen2-VL-72B).
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 256;
const MAX_VOCAB: usize = 1 << 20;

fn cfg_err(m: impl Into<String>) -> Error {
    Error::Config(m.into())
}

fn token_id(v: &serde_json::Value, key: &str) -> Result<Option<u32>> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| cfg_err(format!("`{key}` {x} is not a token id"))),
    }
}

impl Qwen2VlConfig {
    /// Parse a `config.json` whose `model_type` is `qwen2_vl`.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| cfg_err(format!("config.json is not valid JSON: {e}")))?;
        match v.get("model_type").and_then(|m| m.as_str()) {
            Some("qwen2_vl") => {}
            Some(other) => {
                return Err(cfg_err(format!(
                    "model_type `{other}` is not `qwen2_vl` (Qwen2-VL checkpoints)"
                )))
            }
            None => return Err(cfg_err("config.json has no `model_type`")),
        }
        // transformers >= 5 nests the decoder; the hub's configs keep it at the top level.
        let text_v = v.get("text_config").unwrap_or(&v);
        let raw_t: RawText = serde_json::from_value(text_v.clone())
            .map_err(|e| cfg_err(format!("config.json (text): {e}")))?;
        let vision_v = v
            .get("vision_config")
            .ok_or_else(|| cfg_err("config.json has no `vision_config`"))?;
        let raw_v: RawVision = serde_json::from_value(vision_v.clone())
            .map_err(|e| cfg_err(format!("config.json (vision_config): {e}")))?;

        let (rope_theta, mrope_section) = text_rope(&raw_t, &v)?;
        let eos_token_id = match &raw_t.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
            Some(serde_json::Value::Array(a)) => a
                .first()
                .and_then(|x| x.as_u64())
                .and_then(|x| u32::try_from(x).ok()),
            _ => None,
        };
        let text = TextConfig {
            vocab_size: raw_t.vocab_size,
            hidden_size: raw_t.hidden_size,
            intermediate_size: raw_t.intermediate_size,
            num_hidden_layers: raw_t.num_hidden_layers,
            num_attention_heads: raw_t.num_attention_heads,
            num_key_value_heads: raw_t
                .num_key_value_heads
                .unwrap_or(raw_t.num_attention_heads),
            max_position_embeddings: raw_t.max_position_embeddings,
            rms_norm_eps: raw_t.rms_norm_eps,
            rope_theta,
            mrope_section,
            eos_token_id,
        };
        let vision_theta = match raw_v.rope_parameters.as_ref() {
            Some(r) => {
                if let Some(kind) = r.get("rope_type").and_then(|k| k.as_str()) {
                    if kind != "axial" {
                        return Err(cfg_err(format!(
                            "vision_config.rope_parameters.rope_type `{kind}` is not supported (axial)"
                        )));
                    }
                }
                r.get("rope_theta").and_then(|t| t.as_f64()).unwrap_or(1e4)
            }
            None => 1e4,
        };
        let vision = VisionConfig {
            depth: raw_v.depth,
            embed_dim: raw_v.embed_dim,
            hidden_size: raw_v.hidden_size,
            hidden_act: raw_v.hidden_act,
            mlp_ratio: raw_v.mlp_ratio,
            num_heads: raw_v.num_heads,
            in_channels: raw_v.in_channels.or(raw_v.in_chans).unwrap_or(3),
            patch_size: raw_v.patch_size,
            spatial_merge_size: raw_v.spatial_merge_size,
            temporal_patch_size: raw_v.temporal_patch_size,
            rope_theta: vision_theta,
        };
        if raw_t.use_sliding_window {
            return Err(cfg_err(
                "use_sliding_window is true; relvqa runs Qwen2-VL with full attention only",
            ));
        }
        if raw_t.hidden_act != "silu" {
            return Err(cfg_err(format!(
                "text hidden_act `{}` is not supported (silu)",
                raw_t.hidden_act
            )));
        }
        let cfg = Self {
            vision,
            text,
            image_token_id: token_id(&v, "image_token_id")?
                .ok_or_else(|| cfg_err("config.json has no `image_token_id`"))?,
            video_token_id: token_id(&v, "video_token_id")?,
            vision_start_token_id: token_id(&v, "vision_start_token_id")?,
            vision_end_token_id: token_id(&v, "vision_end_token_id")?,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(|t| t.as_bool())
                .unwrap_or(false)
                || raw_t.tie_word_embeddings,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let t = &self.text;
        let v = &self.vision;
        let dims = [
            ("hidden_size", t.hidden_size),
            ("intermediate_size", t.intermediate_size),
            ("num_attention_heads", t.num_attention_heads),
            ("num_key_value_heads", t.num_key_value_heads),
            ("max_position_embeddings", t.max_position_embeddings),
            ("vision_config.embed_dim", v.embed_dim),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_heads", v.num_heads),
            ("vision_config.in_channels", v.in_channels),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.spatial_merge_size", v.spatial_merge_size),
            ("vision_config.temporal_patch_size", v.temporal_patch_size),
        ];
        for (name, x) in dims {
            if x == 0 || x > MAX_DIM * 16 {
                return Err(cfg_err(format!("`{name}` = {x} is out of range")));
            }
        }
        if t.num_hidden_layers > MAX_LAYERS || v.depth > MAX_LAYERS {
            return Err(cfg_err(format!(
                "{} text / {} vision layers exceed {MAX_LAYERS}",
                t.num_hidden_layers, v.depth
            )));
        }
        if t.vocab_size == 0 || t.vocab_size > MAX_VOCAB {
            return Err(cfg_err(format!(
                "vocab_size {} is out of range",
                t.vocab_size
            )));
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err(cfg_err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            )));
        }
        if !t.num_attention_heads.is_multiple_of(t.num_key_value_heads) {
            return Err(cfg_err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads, t.num_key_value_heads
            )));
        }
        let half = t.head_dim() / 2;
        if !t.head_dim().is_multiple_of(2) || t.mrope_section.iter().sum::<usize>() != half {
            return Err(cfg_err(format!(
                "mrope_section {:?} must sum to head_dim / 2 = {half} (head_dim {})",
                t.mrope_section,
                t.head_dim()
            )));
        }
        if !v.embed_dim.is_multiple_of(v.num_heads) || !v.head_dim().is_multiple_of(4) {
            return Err(cfg_err(format!(
                "vision embed_dim {} over {} heads must give a head_dim that is a multiple of 4 (2-D rotary)",
                v.embed_dim, v.num_heads
            )));
        }
        if v.hidden_size != t.hidden_size {
            return Err(cfg_err(format!(
                "vision_config.hidden_size {} (the merger's output) differs from the text hidden_size {}",
                v.hidden_size, t.hidden_size
            )));
        }
        if v.hidden_act != "quick_gelu" {
            return Err(cfg_err(format!(
                "vision_config.hidden_act `{}` is not supported (quick_gelu)",
                v.hidden_act
            )));
        }
        if !(v.mlp_ratio.is_finite() && v.mlp_ratio > 0.0 && v.mlp_hidden() <= MAX_DIM * 16) {
            return Err(cfg_err(format!(
                "vision_config.mlp_ratio {} is out of range",
                v.mlp_ratio
            )));
        }
        let positive = |x: f64, min: f64| x.is_finite() && x > min;
        if !(positive(t.rope_theta, 1.0)
            && positive(v.rope_theta, 1.0)
            && positive(t.rms_norm_eps, 0.0))
        {
            return Err(cfg_err(
                "rope_theta and rms_norm_eps must be positive numbers",
            ));
        }
        if self.image_token_id as usize >= t.vocab_size {
            return Err(cfg_err(format!(
                "image_token_id {} is outside the vocabulary of {}",
                self.image_token_id, t.vocab_size
            )));
        }
        Ok(())
    }

    pub fn lm_head_tied(&self) -> bool {
        self.tie_word_embeddings
    }

    /// Patches merged into one language-model token.
    pub fn merge_len(&self) -> usize {
        self.vision.spatial_merge_size * self.vision.spatial_merge_size
    }
}

/// RoPE base and M-RoPE sections from `rope_parameters` (transformers >= 5) or
/// `rope_scaling` + `rope_theta` (transformers 4, the hub's files), text config first, then
/// the top level.
fn text_rope(t: &RawText, top: &serde_json::Value) -> Result<(f64, [usize; 3])> {
    let params = t
        .rope_parameters
        .as_ref()
        .or(t.rope_scaling.as_ref())
        .or_else(|| top.get("rope_parameters"))
        .or_else(|| top.get("rope_scaling"))
        .filter(|p| !p.is_null());
    let kind = params
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(|k| k.as_str())
        .unwrap_or("default");
    if kind != "default" && kind != "mrope" {
        return Err(cfg_err(format!(
            "rope type `{kind}` is not supported (Qwen2-VL's default M-RoPE)"
        )));
    }
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(|x| x.as_f64())
        .or(t.rope_theta)
        .or_else(|| top.get("rope_theta").and_then(|x| x.as_f64()))
        .unwrap_or(1e6);
    // transformers' default when the config names none.
    let section = match params.and_then(|p| p.get("mrope_section")) {
        None => [16, 24, 24],
        Some(s) => {
            let list: Vec<usize> = s
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64())
                        .map(|x| x as usize)
                        .collect()
                })
                .unwrap_or_default();
            match list.as_slice() {
                [a, b, c] => [*a, *b, *c],
                _ => {
                    return Err(cfg_err(format!(
                        "mrope_section {s} must be three non-negative integers (t, h, w)"
                    )))
                }
            }
        }
    };
    Ok((theta, section))
}
