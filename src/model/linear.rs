//! The linear layer, whose weight is a *kind* rather than a second model: quantized packed
//! weights (issue "Quantization") become another [`Weight`] variant matched here, once.

use crate::backend::Backend;
use crate::error::Result;
use crate::model::params::{Init, Params};

#[derive(Debug, Clone)]
pub enum Weight<B: Backend> {
    /// Float weight `[out, in]`, PyTorch layout.
    Dense(B::Tensor),
    /// Packed int-N weight `[out, in]` with per-group scales and zeros (`crate::quant`).
    Packed(B::Packed),
}

#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// Hugging Face prefix (`model.text_model.layers.0.mlp.up_proj`), for calibration hooks.
    pub name: String,
    pub weight: Weight<B>,
    pub bias: Option<B::Tensor>,
    pub in_features: usize,
    pub out_features: usize,
}

impl<B: Backend> Linear<B> {
    pub fn load(
        p: &mut dyn Params<B>,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = p.weight(
            &format!("{prefix}.weight"),
            &[out_features, in_features],
            Init::Normal(0.02),
        )?;
        let bias = if bias {
            Some(p.tensor(&format!("{prefix}.bias"), &[out_features], Init::Zeros)?)
        } else {
            None
        };
        Ok(Self {
            name: prefix.to_string(),
            weight: w,
            bias,
            in_features,
            out_features,
        })
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let y = match &self.weight {
            Weight::Dense(w) => b.linear(x, w, self.bias.as_ref())?,
            Weight::Packed(w) => b.linear_packed(x, w, self.bias.as_ref())?,
        };
        b.observe_linear(&self.name, x, y)
    }
}

/// `LayerNorm` with weight and bias (SigLIP).
#[derive(Debug, Clone)]
pub struct LayerNorm<B: Backend> {
    pub weight: B::Tensor,
    pub bias: B::Tensor,
    pub eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(p: &mut dyn Params<B>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.tensor(&format!("{prefix}.weight"), &[dim], Init::Ones)?,
            bias: p.tensor(&format!("{prefix}.bias"), &[dim], Init::Zeros)?,
            eps: eps as f32,
        })
    }
    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// `RMSNorm` (Llama).
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    pub weight: B::Tensor,
    pub eps: f32,
}

impl<B: Backend> RmsNorm<B> {
    pub fn load(p: &mut dyn Params<B>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.tensor(&format!("{prefix}.weight"), &[dim], Init::Ones)?,
            eps: eps as f32,
        })
    }
    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        b.rms_norm(x, &self.weight, self.eps)
    }
}
