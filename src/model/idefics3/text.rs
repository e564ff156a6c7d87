//! The Llama text decoder (`LlamaModel` in transformers): RMSNorm, RoPE ("rotate half"),
//! grouped-query attention, SwiGLU MLP, with a KV cache for generation.

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

/// Keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(B::Tensor, B::Tensor)>>,
    len: usize,
    /// Positions the cache is expected to hold in all (a hint: backends that preallocate use it).
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn new(layers: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; layers],
            len: 0,
            capacity,
        }
    }
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

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
        let kvd = cfg.kv_heads() * hd;
        let embed = p.tensor(
            &format!("{prefix}.embed_tokens.weight"),
            &[cfg.vocab_size, d],
            Init::Normal(0.02),
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{prefix}.layers.{i}");
            let ab = cfg.attention_bias;
            let mb = cfg.mlp_bias;
            layers.push(DecoderLayer {
                input_norm: RmsNorm::load(
                    p,
                    &format!("{lp}.input_layernorm"),
                    d,
                    cfg.rms_norm_eps,
                )?,
                q: Linear::load(p, &format!("{lp}.self_attn.q_proj"), d, qd, ab)?,
                k: Linear::load(p, &format!("{lp}.self_attn.k_proj"), d, kvd, ab)?,
                v: Linear::load(p, &format!("{lp}.self_attn.v_proj"), d, kvd, ab)?,
                o: Linear::load(p, &format!("{lp}.self_attn.o_proj"), qd, d, ab)?,
                post_norm: RmsNorm::load(
                    p,
                    &format!("{lp}.post_attention_layernorm"),
                    d,
                    cfg.rms_norm_eps,
                )?,
                gate: Linear::load(
                    p,
                    &format!("{lp}.mlp.gate_proj"),
                    d,
                    cfg.intermediate_size,
                    mb,
                )?,
                up: Linear::load(
                    p,
                    &format!("{lp}.mlp.up_proj"),
                    d,
                    cfg.intermediate_size,
                    mb,
                )?,
                down: Linear::load(
                    p,
                    &format!("{lp}.mlp.down_proj"),
                    cfg.intermediate_size,
                    d,
                    mb,
                )?,
            });
        }
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
        let past = cache.as_ref().map_or(0, |c| c.len);
        if past + s > self.cfg.max_position_embeddings {
            return Err(Error::Question(format!(
                "{} positions exceed the model's context of {}",
                past + s,
                self.cfg.max_position_embeddings
            )));
        }
        let hd = self.cfg.head_dim();
        let (nh, nkv) = (self.cfg.num_attention_heads, self.cfg.kv_heads());
        let (cos, sin) = self.rope_tables(past, s);
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
