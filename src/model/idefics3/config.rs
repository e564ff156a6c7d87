//! `Idefics3Config` as written by Hugging Face transformers
//! (`src/transformers/models/idefics3/configuration_idefics3.py`), with the fields we use.
//! Unknown fields are ignored so real SmolVLM / Idefics3 `config.json` files parse.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisionConfig {
    #[serde(default = "vision_model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "gelu_tanh")]
    pub hidden_act: String,
    #[serde(default = "eps6")]
    pub layer_norm_eps: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextConfig {
    #[serde(default = "llama")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default = "eps5")]
    pub rms_norm_eps: f64,
    /// RoPE base. transformers 5 writes it inside [`TextConfig::rope_parameters`] instead;
    /// [`Idefics3Config::from_json`] copies it from there, so this field is the one to read.
    #[serde(default = "theta")]
    pub rope_theta: f64,
    /// transformers >= 5: `{"rope_theta": .., "rope_type": "default"}` replaces `rope_theta`
    /// and `rope_scaling`. Ignoring it silently ran every such checkpoint with base 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// transformers 4's RoPE variant (`null` for the plain RoPE SmolVLM uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

/// `text_config.rope_parameters` (transformers >= 5, `modeling_rope_utils.py`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Idefics3Config {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub image_token_id: u32,
    #[serde(default = "two")]
    pub scale_factor: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub vision_config: VisionConfig,
    pub text_config: TextConfig,
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn vision_model_type() -> String {
    "idefics3_vision".into()
}
fn llama() -> String {
    "llama".into()
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn gelu_tanh() -> String {
    "gelu_pytorch_tanh".into()
}
fn silu() -> String {
    "silu".into()
}
fn eps6() -> f64 {
    1e-6
}
fn eps5() -> f64 {
    1e-5
}
fn theta() -> f64 {
    10000.0
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The RoPE variant named by `rope_parameters.rope_type` or `rope_scaling` (`type` or
    /// `rope_type`), if any.
    pub fn rope_kind(&self) -> Option<String> {
        if let Some(k) = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.clone())
        {
            return Some(k);
        }
        let s = self.rope_scaling.as_ref()?;
        if s.is_null() {
            return None;
        }
        Some(
            s.get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("unnamed")
                .to_string(),
        )
    }
}

impl VisionConfig {
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }
    pub fn num_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

impl Idefics3Config {
    /// Parse and check that the numbers fit together; every rejection says which field is wrong.
    pub fn from_json(text: &str) -> Result<Self> {
        let probe: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
        match probe.get("model_type").and_then(|v| v.as_str()) {
            Some("idefics3") => {}
            Some(other) => {
                return Err(Error::Config(format!(
                    "unknown model_type `{other}`; relvqa runs `idefics3` (SmolVLM, Idefics3) checkpoints"
                )))
            }
            None => return Err(Error::Config("config.json has no `model_type`".into())),
        }
        let mut cfg: Self = serde_json::from_value(probe)
            .map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let t = &mut cfg.text_config;
        if let Some(theta) = t.rope_parameters.as_ref().and_then(|r| r.rope_theta) {
            t.rope_theta = theta;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Image tokens per image after the pixel-shuffle connector.
    pub fn image_seq_len(&self) -> usize {
        self.vision_config.num_patches() / (self.scale_factor * self.scale_factor)
    }

    /// Side of the square grid the image tokens form: token `r * grid + c` carries the
    /// `scale_factor x scale_factor` block of patches at block row `r`, column `c` (the order
    /// of transformers' `pixel_shuffle`).
    pub fn image_grid(&self) -> usize {
        let v = &self.vision_config;
        v.image_size / v.patch_size.max(1) / self.scale_factor.max(1)
    }

    pub fn lm_head_tied(&self) -> bool {
        self.tie_word_embeddings || self.text_config.tie_word_embeddings
    }

    fn validate(&self) -> Result<()> {
        let v = &self.vision_config;
        let t = &self.text_config;
        let bad = |m: String| Err(Error::Config(m));
        // Only the tanh approximation: exact-erf "gelu" differs by ~1e-3, which would pass
        // unnoticed as a slightly different model instead of failing here.
        if v.hidden_act != "gelu_pytorch_tanh" && v.hidden_act != "gelu_new" {
            return bad(format!(
                "vision_config.hidden_act `{}` is not supported (gelu_pytorch_tanh)",
                v.hidden_act
            ));
        }
        if let Some(kind) = t.rope_kind() {
            if kind != "default" {
                return bad(format!(
                    "text_config RoPE type `{kind}` is not supported (only the default RoPE that SmolVLM uses)"
                ));
            }
        }
        if !(t.rope_theta.is_finite() && t.rope_theta > 0.0) {
            return bad(format!(
                "text_config rope_theta {} must be a positive number",
                t.rope_theta
            ));
        }
        if t.hidden_act != "silu" {
            return bad(format!(
                "text_config.hidden_act `{}` is not supported (silu)",
                t.hidden_act
            ));
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "vision_config.image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return bad(format!(
                "vision hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            ));
        }
        let side = v.patches_per_side();
        if self.scale_factor == 0 || !side.is_multiple_of(self.scale_factor) {
            return bad(format!(
                "{side} patches per side is not divisible by scale_factor {}",
                self.scale_factor
            ));
        }
        if t.num_attention_heads == 0
            || t.kv_heads() == 0
            || !t.num_attention_heads.is_multiple_of(t.kv_heads())
        {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                t.num_attention_heads,
                t.kv_heads()
            ));
        }
        if !t.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", t.head_dim()));
        }
        if self.image_token_id as usize >= t.vocab_size {
            return bad(format!(
                "image_token_id {} is outside vocab_size {}",
                self.image_token_id, t.vocab_size
            ));
        }
        // Caps against absurd configs before anything is allocated from them.
        let cap = |name: &str, x: usize, max: usize| {
            if x == 0 || x > max {
                Err(Error::Config(format!("{name} = {x} is outside 1..={max}")))
            } else {
                Ok(())
            }
        };
        cap("text_config.vocab_size", t.vocab_size, 1 << 20)?;
        cap("text_config.hidden_size", t.hidden_size, 1 << 16)?;
        cap("text_config.num_hidden_layers", t.num_hidden_layers, 1024)?;
        cap(
            "text_config.max_position_embeddings",
            t.max_position_embeddings,
            1 << 20,
        )?;
        cap("vision_config.hidden_size", v.hidden_size, 1 << 16)?;
        cap("vision_config.num_hidden_layers", v.num_hidden_layers, 1024)?;
        cap("vision_config.image_size", v.image_size, 8192)?;
        Ok(())
    }
}
