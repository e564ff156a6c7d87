//! The Qwen2 decoder of Qwen2-VL (`Qwen2VLTextModel` in transformers): RMSNorm, grouped-query
//! attention with biased q/k/v (o without), SwiGLU MLP, and multimodal RoPE: each position is
//! a (temporal, height, width) triple and the rotary frequencies are split in three sections
//! (`mrope_section`), each turning with one of the three. Text positions have all three equal,
//! which is plain RoPE; image tokens get their grid coordinates.

use super::config::TextConfig;
use crate::backend::{causal_mask, Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::linear::{Linear, RmsNorm};
use crate::model::params::{Init, Params};

#[derive(Debug, Clone)]
struct DecoderLayer<B: Backend> {
    input_norm: RmsNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    post_norm: RmsNorm<B>,
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
}

/// Keys and values of every layer for the positions seen so far, plus the M-RoPE offset that
/// decode steps continue from.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(B::Tensor, B::Tensor)>>,
    len: usize,
    capacity: usize,
    /// `max(prompt position) + 1 - prompt length` (transformers' `rope_deltas`): a token
    /// generated at cache index `i` has position `i + rope_delta` on all three axes.
    pub rope_delta: i64,
}

impl<B: Backend> KvCache<B> {
    pub fn new(layers: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; layers],
            len: 0,
            capacity,
            rope_delta: 0,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

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
        let hd = cfg.head_dim();
        let qd = cfg.num_attention_heads * hd;
        let kvd = cfg.num_key_value_heads * hd;
        let f = cfg.intermediate_size;
        let eps = cfg.rms_norm_eps;
        let embed = p.tensor(
            &format!("{prefix}.embed_tokens.weight"),
            &[cfg.vocab_size, d],
            Init::Normal(0.02),
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{prefix}.layers.{i}");
            layers.push(DecoderLayer {
                input_norm: RmsNorm::load(p, &format!("{lp}.input_layernorm"), d, eps)?,
                q: Linear::load(p, &format!("{lp}.self_attn.q_proj"), d, qd, true)?,
                k: Linear::load(p, &format!("{lp}.self_attn.k_proj"), d, kvd, true)?,
                v: Linear::load(p, &format!("{lp}.self_attn.v_proj"), d, kvd, true)?,
                o: Linear::load(p, &format!("{lp}.self_attn.o_proj"), qd, d, false)?,
                post_norm: RmsNorm::load(p, &format!("{lp}.post_attention_layernorm"), d, eps)?,
                gate: Linear::load(p, &format!("{lp}.mlp.gate_proj"), d, f, false)?,
                up: Linear::load(p, &format!("{lp}.mlp.up_proj"), d, f, false)?,
                down: Linear::load(p, &format!("{lp}.mlp.down_proj"), f, d, false)?,
            });
        }
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
        mut cache: Option<&mut KvCache<B>>,
    ) -> Result<B::Tensor> {
        let sh = b.shape(embeds);
        let (bs, s) = match sh.as_slice() {
            [bs, s, _] => (*bs, *s),
            _ => {
                return Err(Error::Invalid(format!(
                    "text model expects [batch, seq, hidden], got {sh:?}"
                )))
            }
        };
        if pos[0].len() != s {
            return Err(Error::Invalid(format!(
                "{} M-RoPE positions for {s} tokens",
                pos[0].len()
            )));
        }
        let past = cache.as_ref().map_or(0, |c| c.len);
        if past + s > self.cfg.max_position_embeddings {
            return Err(Error::Question(format!(
                "{} positions exceed the model's context of {}",
                past + s,
                self.cfg.max_position_embeddings
            )));
        }
        let hd = self.cfg.head_dim();
        let (nh, nkv) = (self.cfg.num_attention_heads, self.cfg.num_key_value_heads);
        let (cos, sin) = self.rope_tables(pos)?;
        let (cos, sin) = (b.upload(&cos)?, b.upload(&sin)?);
        let mask = if s > 1 {
            Some(b.upload(&causal_mask(s, past))?)
        } else {
            None
        };
        let scale = (hd as f32).powf(-0.5);
        let mut h = embeds.clone();
        for (i, l) in self.layers.iter().enumerate() {
            let x = l.input_norm.forward(b, &h)?;
            let heads = |t: B::Tensor, n: usize| -> Result<B::Tensor> {
                b.permute(&b.reshape(&t, &[bs, s, n, hd])?, &[0, 2, 1, 3])
            };
            let q = b.rope(&heads(l.q.forward(b, &x)?, nh)?, &cos, &sin)?;
            let mut k = b.rope(&heads(l.k.forward(b, &x)?, nkv)?, &cos, &sin)?;
            let mut v = heads(l.v.forward(b, &x)?, nkv)?;
            if let Some(c) = cache.as_deref_mut() {
                let capacity = c.capacity;
                if let Some(slot) = c.layers.get_mut(i) {
                    let past = slot.take();
                    k = b.cache_append(past.as_ref().map(|p| &p.0), &k, capacity)?;
                    v = b.cache_append(past.as_ref().map(|p| &p.1), &v, capacity)?;
                    *slot = Some((k.clone(), v.clone()));
                }
            }
            let a = b.attention(&q, &k, &v, mask.as_ref(), scale)?;
            let a = b.reshape(&b.permute(&a, &[0, 2, 1, 3])?, &[bs, s, nh * hd])?;
            h = b.add(&h, &l.o.forward(b, &a)?)?;
            let x = l.post_norm.forward(b, &h)?;
            let g = l.gate.forward(b, &x)?;
            let u = l.up.forward(b, &x)?;
            h = b.add(&h, &l.down.forward(b, &b.silu_mul(&g, &u)?)?)?;
        }
        if let Some(c) = cache {
            c.len += s;
        }
        self.norm.forward(b, &h)
    }
}
