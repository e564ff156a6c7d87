//! The decoder stack Llama (Idefics3's text model) and Qwen2 (Qwen2-VL's) share: pre-norm
//! layers of grouped-query attention with rotary positions and a SwiGLU MLP, and the KV cache.
//! The two differ only in which projections carry a bias and in how rotary angles are
//! computed, so each architecture passes its biases to [`DecoderLayer::load`] and its RoPE
//! tables to [`run_layers`].

use crate::backend::{causal_mask, Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::linear::{Linear, RmsNorm};
use crate::model::params::Params;

/// Sizes of one decoder layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub eps: f64,
}

/// Which projections carry a bias (Llama: as configured; Qwen2: q/k/v only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Biases {
    pub qkv: bool,
    pub o: bool,
    pub mlp: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct DecoderLayer<B: Backend> {
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

impl<B: Backend> DecoderLayer<B> {
    /// The layer under `lp` (`…layers.{i}`), with transformers' tensor names.
    pub fn load(p: &mut dyn Params<B>, lp: &str, d: Dims, bias: Biases) -> Result<Self> {
        let (h, f) = (d.hidden, d.intermediate);
        let (qd, kvd) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        Ok(Self {
            input_norm: RmsNorm::load(p, &format!("{lp}.input_layernorm"), h, d.eps)?,
            q: Linear::load(p, &format!("{lp}.self_attn.q_proj"), h, qd, bias.qkv)?,
            k: Linear::load(p, &format!("{lp}.self_attn.k_proj"), h, kvd, bias.qkv)?,
            v: Linear::load(p, &format!("{lp}.self_attn.v_proj"), h, kvd, bias.qkv)?,
            o: Linear::load(p, &format!("{lp}.self_attn.o_proj"), qd, h, bias.o)?,
            post_norm: RmsNorm::load(p, &format!("{lp}.post_attention_layernorm"), h, d.eps)?,
            gate: Linear::load(p, &format!("{lp}.mlp.gate_proj"), h, f, bias.mlp)?,
            up: Linear::load(p, &format!("{lp}.mlp.up_proj"), h, f, bias.mlp)?,
            down: Linear::load(p, &format!("{lp}.mlp.down_proj"), f, h, bias.mlp)?,
        })
    }
}

/// Keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(B::Tensor, B::Tensor)>>,
    len: usize,
    /// Positions the cache is expected to hold in all (a hint: backends that preallocate use it).
    capacity: usize,
    /// Qwen2-VL's M-RoPE offset (`max(prompt position) + 1 - prompt length`, transformers'
    /// `rope_deltas`): a token generated at cache index `i` has position `i + rope_delta` on all
    /// three axes. Always 0 for plain RoPE.
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
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `embeds [b, s, d]` (after the cached positions) through `layers`, then `norm`; appends to
/// `cache` when given. `rope(past, s)` gives the `[s, head_dim / 2]` cos and sin tables of the
/// new positions; positions beyond `max_positions` are refused.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_layers<B: Backend>(
    b: &B,
    layers: &[DecoderLayer<B>],
    norm: &RmsNorm<B>,
    d: Dims,
    max_positions: usize,
    embeds: &B::Tensor,
    mut cache: Option<&mut KvCache<B>>,
    rope: impl FnOnce(usize, usize) -> Result<(HostTensor, HostTensor)>,
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
    if past + s > max_positions {
        return Err(Error::Question(format!(
            "{} positions exceed the model's context of {max_positions}",
            past + s
        )));
    }
    let (hd, nh, nkv) = (d.head_dim, d.heads, d.kv_heads);
    let (cos, sin) = rope(past, s)?;
    let (cos, sin) = (b.upload(&cos)?, b.upload(&sin)?);
    let mask = if s > 1 {
        Some(b.upload(&causal_mask(s, past))?)
    } else {
        None
    };
    let scale = (hd as f32).powf(-0.5);
    let mut h = embeds.clone();
    for (i, l) in layers.iter().enumerate() {
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
    norm.forward(b, &h)
}
