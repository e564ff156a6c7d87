//! The Qwen2 decoder of Qwen2-VL (`Qwen2VLTextModel` in transformers): RMSNorm, grouped-query
//! attention with biased q/k/v (o without), SwiGLU MLP, and multimodal RoPE: each position is
//! a (temporal, height, width) triple and the rotary frequencies are split in three sections
//! (`mrope_section`), each turning with one of the three. Text positions have all three equal,
//! which is plain RoPE; image tokens get their grid coordinates.

use super::config::TextConfig;
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::decoder::{run_layers, Biases, DecoderLayer, Dims};
use crate::model::linear::RmsNorm;
use crate::model::params::{Init, Params};

pub use crate::model::decoder::KvCache;

/// Positions `[3][s]`: temporal, height and width of every token.
pub type MropePositions = [Vec<i64>; 3];

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
        let eps = cfg.rms_norm_eps;
        let embed = p.tensor(
            &format!("{prefix}.embed_tokens.weight"),
            &[cfg.vocab_size, d],
            Init::Normal(0.02),
        )?;
        let bias = Biases {
            qkv: true,
            o: false,
            mlp: false,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(p, &format!("{prefix}.layers.{i}"), dims(cfg), bias))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(p, &format!("{prefix}.norm"), d, eps)?;
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

    /// M-RoPE tables `[s, head_dim / 2]`: frequency `i` turns with the temporal position in the
    /// first section, the height in the second, the width in the third
    /// (`Qwen2VLRotaryEmbedding.recomposition_frequencies`).
    pub fn rope_tables(&self, pos: &MropePositions) -> Result<(HostTensor, HostTensor)> {
        let hd = self.cfg.head_dim();
        let half = hd / 2;
        let s = pos[0].len();
        if pos[1].len() != s || pos[2].len() != s {
            return Err(Error::Invalid(
                "M-RoPE positions must have the same length on all three axes".into(),
            ));
        }
        let [st, sh, _] = self.cfg.mrope_section;
        let axis = |i: usize| usize::from(i >= st) + usize::from(i >= st + sh);
        let inv: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.cfg.rope_theta.powf((2 * i) as f64 / hd as f64))
            .collect();
        let (mut cos, mut sin) = (Vec::with_capacity(s * half), Vec::with_capacity(s * half));
        for ((t, h), w) in pos[0].iter().zip(&pos[1]).zip(&pos[2]) {
            let p3 = [*t, *h, *w];
            for (i, f) in inv.iter().enumerate() {
                let a = p3[axis(i)] as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok((
            HostTensor::new(vec![s, half], cos)?,
            HostTensor::new(vec![s, half], sin)?,
        ))
    }

    /// Run the decoder over `embeds [1, s, d]` at M-RoPE positions `pos` (after the cached
    /// positions); final-normed hidden states `[1, s, d]`, appending to `cache` when given.
    pub fn forward(
        &self,
        b: &B,
        embeds: &B::Tensor,
        pos: &MropePositions,
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
            |_, s| {
                if pos[0].len() != s {
                    return Err(Error::Invalid(format!(
                        "{} M-RoPE positions for {s} tokens",
                        pos[0].len()
                    )));
                }
                self.rope_tables(pos)
            },
        )
    }
}

fn dims(cfg: &TextConfig) -> Dims {
    Dims {
        hidden: cfg.hidden_size,
        heads: cfg.num_attention_heads,
        kv_heads: cfg.num_key_value_heads,
        head_dim: cfg.head_dim(),
        intermediate: cfg.intermediate_size,
        eps: cfg.rms_norm_eps,
    }
}
