//! Qwen2-VL: vision transformer with 2-D RoPE and a patch merger -> Qwen2 decoder with
//! multimodal RoPE. Image tokens (`<|image_pad|>`) take the merged image features in order
//! (`Qwen2VLModel.forward`'s `masked_scatter`), and their positions are their grid coordinates
//! (`get_rope_index`). Tensor names are Hugging Face's, in the hub's layout (`visual.*`,
//! `model.*`, which transformers 5 also writes) or transformers 5's in-memory one
//! (`model.visual.*`, `model.language_model.*`).

pub mod answer;
pub mod config;
pub mod golden;
pub mod loader;
pub mod processor;
pub mod prompt;
pub mod text;
pub mod vision;

use std::ops::Range;

pub use config::Qwen2VlConfig;
pub use text::{KvCache, MropePositions};
pub use vision::GridThw;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::idefics3::image_runs;
use crate::model::linear::{Linear, Weight};
use crate::model::params::Params;

#[derive(Debug, Clone)]
pub struct Qwen2Vl<B: Backend> {
    pub cfg: Qwen2VlConfig,
    pub vision: vision::VisionModel<B>,
    pub text: text::TextModel<B>,
    pub lm_head: Linear<B>,
}

/// The first of `candidates` whose `probe` tensor the checkpoint has (else the first).
fn pick_prefix(
    has: impl Fn(&str) -> bool,
    candidates: &[&'static str],
    probe: &str,
) -> &'static str {
    candidates
        .iter()
        .find(|c| has(&format!("{c}.{probe}")))
        .or(candidates.first())
        .copied()
        .unwrap_or_default()
}

/// Where the language model's tensors are in either checkpoint layout: `model` (the hub's)
/// or `model.language_model` (transformers 5's in memory).
const TEXT_PREFIXES: [&str; 2] = ["model", "model.language_model"];

/// The language model's prefix in a checkpoint whose tensor names `has` answers for.
pub fn text_prefix(has: impl Fn(&str) -> bool) -> &'static str {
    pick_prefix(has, &TEXT_PREFIXES, "embed_tokens.weight")
}

/// Where the decoder layers' names start (before the layer index) in that checkpoint; MBQ's
/// recording backend keeps it for the whole calibration, hence static.
pub fn text_layers_prefix(has: impl Fn(&str) -> bool) -> &'static str {
    match text_prefix(has) {
        "model.language_model" => "model.language_model.layers.",
        _ => "model.layers.",
    }
}

impl<B: Backend> Qwen2Vl<B> {
    pub fn load(p: &mut dyn Params<B>, cfg: &Qwen2VlConfig) -> Result<Self> {
        let vp = pick_prefix(
            |n| p.contains(n),
            &["visual", "model.visual"],
            "patch_embed.proj.weight",
        );
        let tp = text_prefix(|n| p.contains(n));
        let vision = vision::VisionModel::load(p, &cfg.vision, vp)?;
        let text = text::TextModel::load(p, &cfg.text, tp)?;
        let t = &cfg.text;
        let lm_head = if p.contains("lm_head.weight") || !cfg.lm_head_tied() {
            Linear::load(p, "lm_head", t.hidden_size, t.vocab_size, false)?
        } else {
            Linear {
                name: "lm_head".into(),
                weight: Weight::Dense(text.embed.clone()),
                bias: None,
                in_features: t.hidden_size,
                out_features: t.vocab_size,
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            vision,
            text,
            lm_head,
        })
    }

    /// A cache for up to `positions` positions (prompt plus answer), capped at the context.
    pub fn new_cache(&self, positions: usize) -> KvCache<B> {
        let t = &self.cfg.text;
        KvCache::new(
            t.num_hidden_layers,
            positions.min(t.max_position_embeddings),
        )
    }

    /// Language-model tokens of one image: `t · (h / merge) · (w / merge)`.
    pub fn image_tokens(&self, grid: GridThw) -> usize {
        let m = self.cfg.vision.spatial_merge_size.max(1);
        grid[0] * (grid[1] / m) * (grid[2] / m)
    }

    /// Image-token runs of `ids`, each checked to be exactly one image of `grids`, in order.
    fn image_slots(&self, ids: &[u32], grids: &[GridThw]) -> Result<Vec<Range<usize>>> {
        let runs = image_runs(ids, self.cfg.image_token_id);
        if runs.len() != grids.len() {
            return Err(Error::Invalid(format!(
                "prompt has {} run(s) of image tokens but {} image(s) were given",
                runs.len(),
                grids.len()
            )));
        }
        for (i, (r, g)) in runs.iter().zip(grids).enumerate() {
            let want = self.image_tokens(*g);
            if r.len() != want {
                return Err(Error::Invalid(format!(
                    "image {i}: the prompt has {} image tokens but its grid {g:?} gives {want}",
                    r.len()
                )));
            }
        }
        Ok(runs)
    }

    /// M-RoPE positions of a prompt (`Qwen2VLModel.get_rope_index`) and the offset decode
    /// steps continue from: text counts on from the last position; an image of `h × w` merged
    /// tokens starting at `p` puts token `(t, y, x)` at `(p + t, p + y, p + x)` and the text
    /// after it at `p + max(h, w)`.
    pub fn rope_index(&self, ids: &[u32], grids: &[GridThw]) -> Result<(MropePositions, i64)> {
        let runs = self.image_slots(ids, grids)?;
        let m = self.cfg.vision.spatial_merge_size.max(1);
        let mut pos: MropePositions = [
            Vec::with_capacity(ids.len()),
            Vec::with_capacity(ids.len()),
            Vec::with_capacity(ids.len()),
        ];
        let text = |pos: &mut MropePositions, n: usize, cur: &mut i64| {
            for _ in 0..n {
                for axis in pos.iter_mut() {
                    axis.push(*cur);
                }
                *cur += 1;
            }
        };
        let (mut cur, mut at) = (0i64, 0usize);
        for (r, &[t, h, w]) in runs.iter().zip(grids) {
            text(&mut pos, r.start - at, &mut cur);
            let (lh, lw) = (h / m, w / m);
            for ti in 0..t {
                for y in 0..lh {
                    for x in 0..lw {
                        pos[0].push(cur + ti as i64);
                        pos[1].push(cur + y as i64);
                        pos[2].push(cur + x as i64);
                    }
                }
            }
            cur += lh.max(lw) as i64;
            at = r.end;
        }
        text(&mut pos, ids.len() - at, &mut cur);
        let max = pos.iter().flatten().copied().max().unwrap_or(-1);
        Ok((pos, max + 1 - ids.len() as i64))
    }

    /// Token embeddings of `ids` with each image-token run replaced by its image's features
    /// (`features [tokens of all images, d]`, in the prompt's order).
    pub fn embed_multimodal(
        &self,
        b: &B,
        ids: &[u32],
        grids: &[GridThw],
        features: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let s = ids.len();
        let emb = self.text.embed_ids(b, &b.upload_ids(ids, &[1, s])?)?;
        let runs = self.image_slots(ids, grids)?;
        let Some(feats) = features else {
            if !runs.is_empty() {
                return Err(Error::Invalid(format!(
                    "prompt has {} image run(s) but no image features were given",
                    runs.len()
                )));
            }
            return Ok(emb);
        };
        let fs = b.shape(feats);
        let total: usize = runs.iter().map(|r| r.len()).sum();
        if fs.len() != 2 || fs[0] != total {
            return Err(Error::Invalid(format!(
                "image features {fs:?} do not fill the prompt's {total} image tokens"
            )));
        }
        let feats = b.reshape(feats, &[1, fs[0], fs[1]])?;
        crate::model::image_tokens::splice(b, &emb, &feats, &runs)
    }

    /// The prompt's forward pass: `pixels [patches, c·t·p·p]` of `grids` (none for a text-only
    /// prompt); final hidden states `[1, s, d]`. Sets the cache's M-RoPE offset.
    pub fn forward_prompt(
        &self,
        b: &B,
        ids: &[u32],
        pixels: Option<&B::Tensor>,
        grids: &[GridThw],
        cache: Option<&mut KvCache<B>>,
    ) -> Result<B::Tensor> {
        if ids.is_empty() {
            return Err(Error::Question("the prompt is empty".into()));
        }
        let feats = match pixels {
            Some(p) => Some(self.vision.forward(b, p, grids)?),
            None if grids.is_empty() => None,
            None => {
                return Err(Error::Invalid(format!(
                    "{} image grid(s) but no pixel values",
                    grids.len()
                )))
            }
        };
        let (pos, delta) = self.rope_index(ids, grids)?;
        let emb = self.embed_multimodal(b, ids, grids, feats.as_ref())?;
        match cache {
            Some(c) => {
                if !c.is_empty() {
                    return Err(Error::Invalid(
                        "a prompt must start from an empty cache".into(),
                    ));
                }
                c.rope_delta = delta;
                self.text.forward(b, &emb, &pos, Some(c))
            }
            None => self.text.forward(b, &emb, &pos, None),
        }
    }

    /// Decode step(s) after the prompt: plain tokens at `cache index + rope_delta` on all
    /// three axes, as transformers continues once the image is in the cache.
    pub fn forward_tokens(&self, b: &B, ids: &[u32], cache: &mut KvCache<B>) -> Result<B::Tensor> {
        let s = ids.len();
        let start = cache.len() as i64 + cache.rope_delta;
        let p: Vec<i64> = (0..s as i64).map(|i| start + i).collect();
        let pos: MropePositions = [p.clone(), p.clone(), p];
        let emb = self.text.embed_ids(b, &b.upload_ids(ids, &[1, s])?)?;
        self.text.forward(b, &emb, &pos, Some(cache))
    }

    pub fn logits(&self, b: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.lm_head.forward(b, hidden)
    }
}
