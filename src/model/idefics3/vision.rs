//! SigLIP-style vision transformer as in transformers' `Idefics3VisionTransformer`
//! (`modeling_idefics3.py`): a stride-`patch` Conv2d patch embedding, learned position
//! embeddings, pre-LayerNorm encoder layers with biased attention and a GELU(tanh) MLP, and a
//! final `post_layernorm`. Padded images (a [`PatchMask`] with padded patches) get
//! transformers' bucketed position ids and a key mask in every layer (`patches.rs`).

use super::config::VisionConfig;
use super::patches::{is_identity, PatchMask};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::linear::{LayerNorm, Linear, Weight};
use crate::model::params::{Init, Params};

#[derive(Debug, Clone)]
struct VisionLayer<B: Backend> {
    ln1: LayerNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

#[derive(Debug, Clone)]
pub struct VisionModel<B: Backend> {
    cfg: VisionConfig,
    /// The Conv2d kernel flattened to `[hidden, channels * patch * patch]`: a stride-`patch`
    /// convolution over non-overlapping patches is exactly a linear layer over unfolded patches.
    patch: Linear<B>,
    pos: B::Tensor,
    layers: Vec<VisionLayer<B>>,
    post_ln: LayerNorm<B>,
}

impl<B: Backend> VisionModel<B> {
    pub fn load(p: &mut dyn Params<B>, cfg: &VisionConfig, prefix: &str) -> Result<Self> {
        let d = cfg.hidden_size;
        let c = cfg.num_channels;
        let ps = cfg.patch_size;
        let conv = p.tensor(
            &format!("{prefix}.embeddings.patch_embedding.weight"),
            &[d, c, ps, ps],
            Init::Normal(0.02),
        )?;
        let conv = p.backend().reshape(&conv, &[d, c * ps * ps])?;
        let bias = p.tensor(
            &format!("{prefix}.embeddings.patch_embedding.bias"),
            &[d],
            Init::Zeros,
        )?;
        let patch = Linear {
            name: format!("{prefix}.embeddings.patch_embedding"),
            weight: Weight::Dense(conv),
            bias: Some(bias),
            in_features: c * ps * ps,
            out_features: d,
        };
        let pos = p.tensor(
            &format!("{prefix}.embeddings.position_embedding.weight"),
            &[cfg.num_patches(), d],
            Init::Normal(0.02),
        )?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lp = format!("{prefix}.encoder.layers.{i}");
            layers.push(VisionLayer {
                ln1: LayerNorm::load(p, &format!("{lp}.layer_norm1"), d, cfg.layer_norm_eps)?,
                q: Linear::load(p, &format!("{lp}.self_attn.q_proj"), d, d, true)?,
                k: Linear::load(p, &format!("{lp}.self_attn.k_proj"), d, d, true)?,
                v: Linear::load(p, &format!("{lp}.self_attn.v_proj"), d, d, true)?,
                o: Linear::load(p, &format!("{lp}.self_attn.out_proj"), d, d, true)?,
                ln2: LayerNorm::load(p, &format!("{lp}.layer_norm2"), d, cfg.layer_norm_eps)?,
                fc1: Linear::load(p, &format!("{lp}.mlp.fc1"), d, cfg.intermediate_size, true)?,
                fc2: Linear::load(p, &format!("{lp}.mlp.fc2"), cfg.intermediate_size, d, true)?,
            });
        }
        let post_ln = LayerNorm::load(
            p,
            &format!("{prefix}.post_layernorm"),
            d,
            cfg.layer_norm_eps,
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            patch,
            pos,
            layers,
            post_ln,
        })
    }

    /// `pixels [n, c, h, w]` (normalised) -> `[n, patches, hidden]`, every patch real.
    pub fn forward(&self, b: &B, pixels: &B::Tensor) -> Result<B::Tensor> {
        self.forward_masked(b, pixels, None)
    }

    /// As [`Self::forward`], with `mask` saying which patches of each image are real (padded
    /// images): their position ids follow transformers' bucketing and padded patches are
    /// hidden as keys. `None` means every patch is real.
    pub fn forward_masked(
        &self,
        b: &B,
        pixels: &B::Tensor,
        mask: Option<&PatchMask>,
    ) -> Result<B::Tensor> {
        let s = b.shape(pixels);
        let (c, ps, side) = (
            self.cfg.num_channels,
            self.cfg.patch_size,
            self.cfg.image_size,
        );
        if s.len() != 4 || s[1] != c || s[2] != side || s[3] != side {
            return Err(Error::Invalid(format!(
                "vision input must be [n, {c}, {side}, {side}], got {s:?}"
            )));
        }
        let n = s[0];
        let g = side / ps;
        let full;
        let mask = match mask {
            Some(m) if m.images() != n || m.side() != g => {
                return Err(Error::Invalid(format!(
                "patch mask for {} image(s) of {}x{} patches does not fit {n} image(s) of {g}x{g}",
                m.images(),
                m.side(),
                m.side()
            )))
            }
            Some(m) => m,
            None => {
                full = PatchMask::full(n, g);
                &full
            }
        };
        // Unfold non-overlapping patches in (channel, ky, kx) order, the Conv2d weight's order.
        let x = b.reshape(pixels, &[n, c, g, ps, g, ps])?;
        let x = b.permute(&x, &[0, 2, 4, 1, 3, 5])?;
        let x = b.reshape(&x, &[n, g * g, c * ps * ps])?;
        let ids = mask.position_ids();
        let pos = if is_identity(&ids, g * g) {
            // Every image uses the table in order: add it whole (bit-identical to before
            // padded images were supported, and no gather).
            self.pos.clone()
        } else {
            b.embedding(&b.upload_ids(&ids, &[n, g * g])?, &self.pos)?
        };
        let mut h = b.add(&self.patch.forward(b, &x)?, &pos)?;
        let key_bias = if mask.is_full() {
            None
        } else {
            Some(b.upload(&mask.key_bias()?)?)
        };
        let heads = self.cfg.num_attention_heads;
        let hd = self.cfg.head_dim();
        let split = |t: &B::Tensor| -> Result<B::Tensor> {
            let t = b.reshape(t, &[n, g * g, heads, hd])?;
            b.permute(&t, &[0, 2, 1, 3])
        };
        for l in &self.layers {
            let x = l.ln1.forward(b, &h)?;
            let q = split(&l.q.forward(b, &x)?)?;
            let k = split(&l.k.forward(b, &x)?)?;
            let v = split(&l.v.forward(b, &x)?)?;
            let a = b.attention(&q, &k, &v, key_bias.as_ref(), (hd as f32).powf(-0.5))?;
            let a = b.reshape(&b.permute(&a, &[0, 2, 1, 3])?, &[n, g * g, heads * hd])?;
            h = b.add(&h, &l.o.forward(b, &a)?)?;
            let x = l.ln2.forward(b, &h)?;
            let x = l.fc2.forward(b, &b.gelu_tanh(&l.fc1.forward(b, &x)?)?)?;
            h = b.add(&h, &x)?;
        }
        self.post_ln.forward(b, &h)
    }
}
