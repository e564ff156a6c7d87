//! The Llama text decoder (`LlamaModel` in transformers): RMSNorm, RoPE ("rotate half"),
//! grouped-query attention, SwiGLU MLP, with a KV cache for generation.

use super::config::TextConfig;
use crate::backend::{Backend, HostTensor};
use crate::error::Result;
use crate::model::decoder::{run_layers, Biases, DecoderLayer, Dims};
use crate::model::linear::RmsNorm;
use crate::model::params::{Init, Params};

pub use crate::model::decoder::KvCache;

#[derive(Debug, Clone)]
pub struct TextModel<B: Backend> {
    cfg: TextConfig,
    pub embed: B::Tensor,
    layers: Vec<DecoderLayer<B>>,
    norm: RmsNorm<B>,
}

impl<B: Backend> TextModel<B> {
    pub fn load(p: &mut dyn Params<B>, cfg: &TextConfig, prefix: &str) -> Result<Self> {
        let d = cfg.hidden_size;
        let embed = p.tensor(
            &format!("{prefix}.embed_tokens.weight"),
            &[cfg.vocab_size, d],
            Init::Normal(0.02),
        )?;
        let bias = Biases {
            qkv: cfg.attention_bias,
            o: cfg.attention_bias,
            mlp: cfg.mlp_bias,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(p, &format!("{prefix}.layers.{i}"), dims(cfg), bias))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(p, &format!("{prefix}.norm"), d, cfg.rms_norm_eps)?;
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    pub fn embed_ids(&self, b: &B, ids: &B::Tensor) -> Result<B::Tensor> {
        b.embedding(ids, &self.embed)
    }

    /// RoPE tables for positions `start..start + len`: `[len, head_dim / 2]` each.
    fn rope_tables(&self, start: usize, len: usize) -> (HostTensor, HostTensor) {
        let hd = self.cfg.head_dim();
        let half = hd / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in start..start + len {
            for i in 0..half {
                let inv = 1.0 / self.cfg.rope_theta.powf((2 * i) as f64 / hd as f64);
                let a = pos as f64 * inv;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        (
            HostTensor {
                shape: vec![len, half],
                data: cos,
            },
            HostTensor {
                shape: vec![len, half],
                data: sin,
            },
        )
    }

    /// Run the decoder over `embeds [b, s, d]` that follow the cached positions; returns the
    /// final-normed hidden states `[b, s, d]` and appends to `cache` when given.
    pub fn forward(
        &self,
        b: &B,
        embeds: &B::Tensor,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<B::Tensor> {
        let max = self.cfg.max_position_embeddings;
        run_layers(
            b,
            &self.layers,
            &self.norm,
            dims(&self.cfg),
            max,
            embeds,
            cache,
            |past, s| Ok(self.rope_tables(past, s)),
        )
    }
}

fn dims(cfg: &TextConfig) -> Dims {
    Dims {
        hidden: cfg.hidden_size,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.kv_heads(),
        head_dim: cfg.head_dim(),
        intermediate: cfg.intermediate_size,
        eps: cfg.rms_norm_eps,
    }
}
