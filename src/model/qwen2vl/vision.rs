//! Qwen2-VL's vision transformer (`Qwen2VisionTransformerPretrainedModel` in transformers'
//! `modeling_qwen2_vl.py`): a Conv3d patch embedding over `temporal × patch × patch` patches
//! (a linear map over the processor's flattened patches), 2-D rotary embeddings (height and
//! width positions, the same frequencies for both), pre-LayerNorm blocks with a fused `qkv`
//! projection and a QuickGELU MLP, attention confined to each image (`cu_seqlens`), and the
//! patch merger (LayerNorm, then an MLP over each `merge × merge` group of patches).

use super::config::VisionConfig;
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::linear::{LayerNorm, Linear, Weight};
use crate::model::params::{Init, Params};

/// transformers hard-codes the vision LayerNorms' epsilon.
const LN_EPS: f64 = 1e-6;
/// QuickGELU's constant: `x * sigmoid(1.702 x)`.
const QUICK_GELU: f32 = 1.702;

#[derive(Debug, Clone)]
struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    qkv: Linear<B>,
    proj: Linear<B>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
}

#[derive(Debug, Clone)]
pub struct VisionModel<B: Backend> {
    cfg: VisionConfig,
    /// The Conv3d kernel `[embed, c, t, p, p]` flattened to `[embed, c·t·p·p]`: the processor
    /// already cut the image into non-overlapping patches in (c, t, y, x) order.
    patch: Linear<B>,
    blocks: Vec<Block<B>>,
    ln_q: LayerNorm<B>,
    mlp0: Linear<B>,
    mlp2: Linear<B>,
}

/// One image's patch grid: `(t, h, w)` in patches (`image_grid_thw`).
pub type GridThw = [usize; 3];

impl<B: Backend> VisionModel<B> {
    pub fn load(p: &mut dyn Params<B>, cfg: &VisionConfig, prefix: &str) -> Result<Self> {
        let e = cfg.embed_dim;
        let (c, t, ps) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let conv = p.tensor(
            &format!("{prefix}.patch_embed.proj.weight"),
            &[e, c, t, ps, ps],
            Init::Normal(0.02),
        )?;
        let conv = p.backend().reshape(&conv, &[e, cfg.patch_dim()])?;
        let patch = Linear {
            name: format!("{prefix}.patch_embed.proj"),
            weight: Weight::Dense(conv),
            bias: None,
            in_features: cfg.patch_dim(),
            out_features: e,
        };
        let hidden = cfg.mlp_hidden();
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let bp = format!("{prefix}.blocks.{i}");
            blocks.push(Block {
                norm1: LayerNorm::load(p, &format!("{bp}.norm1"), e, LN_EPS)?,
                qkv: Linear::load(p, &format!("{bp}.attn.qkv"), e, 3 * e, true)?,
                proj: Linear::load(p, &format!("{bp}.attn.proj"), e, e, true)?,
                norm2: LayerNorm::load(p, &format!("{bp}.norm2"), e, LN_EPS)?,
                fc1: Linear::load(p, &format!("{bp}.mlp.fc1"), e, hidden, true)?,
                fc2: Linear::load(p, &format!("{bp}.mlp.fc2"), hidden, e, true)?,
            });
        }
        let m = cfg.merged_dim();
        Ok(Self {
            cfg: cfg.clone(),
            patch,
            blocks,
            ln_q: LayerNorm::load(p, &format!("{prefix}.merger.ln_q"), e, LN_EPS)?,
            mlp0: Linear::load(p, &format!("{prefix}.merger.mlp.0"), m, m, true)?,
            mlp2: Linear::load(
                p,
                &format!("{prefix}.merger.mlp.2"),
                m,
                cfg.hidden_size,
                true,
            )?,
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Check `grids` against the patches given and the merge size; returns the patch count.
    pub fn check_grids(&self, grids: &[GridThw], patches: usize) -> Result<usize> {
        let m = self.cfg.spatial_merge_size;
        let mut total = 0usize;
        for (i, &[t, h, w]) in grids.iter().enumerate() {
            if t == 0 || h == 0 || w == 0 || !h.is_multiple_of(m) || !w.is_multiple_of(m) {
                return Err(Error::Invalid(format!(
                    "image {i}: grid (t, h, w) = ({t}, {h}, {w}) must be positive with h and w multiples of the merge size {m}"
                )));
            }
            total = t
                .checked_mul(h)
                .and_then(|x| x.checked_mul(w))
                .and_then(|x| total.checked_add(x))
                .ok_or_else(|| Error::Invalid(format!("image {i}: grid too large")))?;
        }
        if total != patches {
            return Err(Error::Invalid(format!(
                "image grids {grids:?} hold {total} patches but pixel_values has {patches}"
            )));
        }
        Ok(total)
    }

    /// (cos, sin) `[patches, head_dim / 2]` of the 2-D rotary embedding: the first half of
    /// the frequencies turn with the patch's row, the second with its column. Patches are in
    /// the processor's order: merge blocks row-major, and inside each block row-major
    /// (`get_vision_position_ids`), repeated for each temporal slice.
    fn rotary_tables(&self, grids: &[GridThw]) -> (HostTensor, HostTensor) {
        let hd = self.cfg.head_dim();
        let quarter = hd / 4;
        let m = self.cfg.spatial_merge_size;
        // transformers: inv_freq = 1 / theta^(arange(0, hd/2, 2) / (hd/2)).
        let inv: Vec<f64> = (0..quarter)
            .map(|i| 1.0 / self.cfg.rope_theta.powf((2 * i) as f64 / (hd / 2) as f64))
            .collect();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for ih in 0..m {
                            for iw in 0..m {
                                let (y, x) = ((bh * m + ih) as f64, (bw * m + iw) as f64);
                                for pos in [y, x] {
                                    for f in &inv {
                                        let a = (pos * f) as f32;
                                        cos.push(a.cos());
                                        sin.push(a.sin());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let n = cos.len() / (2 * quarter).max(1);
        (
            HostTensor {
                shape: vec![n, 2 * quarter],
                data: cos,
            },
            HostTensor {
                shape: vec![n, 2 * quarter],
                data: sin,
            },
        )
    }

    /// `pixels [patches, c·t·p·p]` (the processor's flattened patches of every image, in
    /// order) and each image's grid -> merged image tokens `[patches / merge², text_hidden]`.
    pub fn forward(&self, b: &B, pixels: &B::Tensor, grids: &[GridThw]) -> Result<B::Tensor> {
        let s = b.shape(pixels);
        let n = match s.as_slice() {
            [n, d] if *d == self.cfg.patch_dim() => *n,
            _ => {
                return Err(Error::Invalid(format!(
                    "vision input must be [patches, {}] (channels · temporal · patch · patch), got {s:?}",
                    self.cfg.patch_dim()
                )))
            }
        };
        self.check_grids(grids, n)?;
        let e = self.cfg.embed_dim;
        let heads = self.cfg.num_heads;
        let hd = self.cfg.head_dim();
        let (cos, sin) = self.rotary_tables(grids);
        let (cos, sin) = (b.upload(&cos)?, b.upload(&sin)?);
        // Attention runs within each frame of each image (`get_vision_cu_seqlens`).
        let mut segments = Vec::new();
        let mut start = 0;
        for &[t, h, w] in grids {
            for _ in 0..t {
                segments.push((start, h * w));
                start += h * w;
            }
        }
        let scale = (hd as f32).powf(-0.5);
        let mut x = self.patch.forward(b, pixels)?;
        for blk in &self.blocks {
            let y = blk.norm1.forward(b, &x)?;
            let qkv = b.reshape(&blk.qkv.forward(b, &y)?, &[n, 3, heads, hd])?;
            let part = |i: usize| -> Result<B::Tensor> {
                let t = b.narrow(&qkv, 1, i, 1)?;
                let t = b.reshape(&t, &[1, n, heads, hd])?;
                b.permute(&t, &[0, 2, 1, 3])
            };
            let q = b.rope(&part(0)?, &cos, &sin)?;
            let k = b.rope(&part(1)?, &cos, &sin)?;
            let v = part(2)?;
            let a = if segments.len() == 1 {
                b.attention(&q, &k, &v, None, scale)?
            } else {
                let mut outs = Vec::with_capacity(segments.len());
                for &(s0, len) in &segments {
                    outs.push(b.attention(
                        &b.narrow(&q, 2, s0, len)?,
                        &b.narrow(&k, 2, s0, len)?,
                        &b.narrow(&v, 2, s0, len)?,
                        None,
                        scale,
                    )?);
                }
                let refs: Vec<&B::Tensor> = outs.iter().collect();
                b.cat(&refs, 2)?
            };
            let a = b.reshape(&b.permute(&a, &[0, 2, 1, 3])?, &[n, e])?;
            x = b.add(&x, &blk.proj.forward(b, &a)?)?;
            let y = blk.norm2.forward(b, &x)?;
            let y = blk.fc1.forward(b, &y)?;
            // QuickGELU as SiLU: x·σ(1.702x) = silu(1.702x) / 1.702.
            let y = b.scale(&b.silu(&b.scale(&y, QUICK_GELU)?)?, 1.0 / QUICK_GELU)?;
            x = b.add(&x, &blk.fc2.forward(b, &y)?)?;
        }
        let merged = self.cfg.merge_len_patches();
        let y = self.ln_q.forward(b, &x)?;
        let y = b.reshape(&y, &[n / merged, self.cfg.merged_dim()])?;
        let y = b.gelu_erf(&self.mlp0.forward(b, &y)?)?;
        self.mlp2.forward(b, &y)
    }
}

impl VisionConfig {
    /// Patches per merged token (`merge²`).
    pub fn merge_len_patches(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }
}
