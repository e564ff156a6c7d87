//! Idefics3 (SmolVLM family): vision tower -> pixel-shuffle connector -> Llama decoder, with
//! image-token embeddings replaced by projected image features (`Idefics3Model.inputs_merger`).
//! Tensor names are Hugging Face's, so real checkpoints load through the same code.

pub mod config;
pub mod connector;
pub mod patches;
pub mod processor;
pub mod text;
pub mod vision;

use std::ops::Range;

pub use config::{Idefics3Config, TextConfig, VisionConfig};
pub use text::KvCache;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::linear::{Linear, Weight};
use crate::model::params::Params;

#[derive(Debug, Clone)]
pub struct Idefics3<B: Backend> {
    pub cfg: Idefics3Config,
    pub vision: vision::VisionModel<B>,
    pub connector: connector::Connector<B>,
    pub text: text::TextModel<B>,
    pub lm_head: Linear<B>,
}

/// Contiguous runs of `image_token_id` in a prompt.
pub fn image_runs(ids: &[u32], image_token_id: u32) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        if ids[i] == image_token_id {
            let start = i;
            while i < ids.len() && ids[i] == image_token_id {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    runs
}

impl<B: Backend> Idefics3<B> {
    pub fn load(p: &mut dyn Params<B>, cfg: &Idefics3Config) -> Result<Self> {
        let vision = vision::VisionModel::load(p, &cfg.vision_config, "model.vision_model")?;
        let connector = connector::Connector::load(
            p,
            "model.connector",
            cfg.vision_config.hidden_size,
            cfg.text_config.hidden_size,
            cfg.scale_factor,
        )?;
        let text = text::TextModel::load(p, &cfg.text_config, "model.text_model")?;
        let t = &cfg.text_config;
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
            connector,
            text,
            lm_head,
        })
    }

    /// A cache for up to `positions` positions (prompt plus answer), capped at the context.
    pub fn new_cache(&self, positions: usize) -> KvCache<B> {
        let t = &self.cfg.text_config;
        KvCache::new(
            t.num_hidden_layers,
            positions.min(t.max_position_embeddings),
        )
    }

    /// `pixels [n, 3, h, w] -> [n, image_seq_len, text_hidden]`.
    pub fn image_features(&self, b: &B, pixels: &B::Tensor) -> Result<B::Tensor> {
        self.image_features_masked(b, pixels, None)
    }

    /// As [`Self::image_features`] for images with padding: `mask` says which patches are real
    /// (see [`patches`]). Padded patches still yield features, as in transformers: the
    /// connector shuffles every patch.
    pub fn image_features_masked(
        &self,
        b: &B,
        pixels: &B::Tensor,
        mask: Option<&patches::PatchMask>,
    ) -> Result<B::Tensor> {
        let v = self.vision.forward_masked(b, pixels, mask)?;
        self.connector.forward(b, &v)
    }

    /// Token embeddings for `ids [bs, s]` (row-major) with every image-token run replaced by the
    /// next image's features. All rows must put their image tokens at the same positions (true
    /// for prompts built by [`crate::model::prompt`], which right-pad after the image).
    pub fn embed_multimodal(
        &self,
        b: &B,
        ids: &[u32],
        bs: usize,
        features: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        if bs == 0 || !ids.len().is_multiple_of(bs) {
            return Err(Error::Invalid(format!(
                "{} ids do not split into {bs} rows",
                ids.len()
            )));
        }
        let s = ids.len() / bs;
        let ids_t = b.upload_ids(ids, &[bs, s])?;
        let emb = self.text.embed_ids(b, &ids_t)?;
        let img = self.cfg.image_token_id;
        let runs = image_runs(&ids[..s], img);
        for r in 1..bs {
            if image_runs(&ids[r * s..(r + 1) * s], img) != runs {
                return Err(Error::Invalid(
                    "batch rows place image tokens at different positions".into(),
                ));
            }
        }
        let n_img_tokens: usize = runs.iter().map(|r| r.len()).sum();
        let Some(feats) = features else {
            if n_img_tokens > 0 {
                return Err(Error::Invalid(format!(
                    "prompt has {n_img_tokens} image tokens but no image was given"
                )));
            }
            return Ok(emb);
        };
        let fs = b.shape(feats);
        let per = self.cfg.image_seq_len();
        if fs.len() != 3 || fs[0] % bs != 0 || fs[1] != per {
            return Err(Error::Invalid(format!(
                "image features {fs:?} do not fit a batch of {bs}"
            )));
        }
        let imgs_per_row = fs[0] / bs;
        if n_img_tokens != imgs_per_row * per {
            return Err(Error::Invalid(format!(
                "prompt has {n_img_tokens} image tokens but {imgs_per_row} image(s) give {}",
                imgs_per_row * per
            )));
        }
        let d = fs[2];
        let feats = b.reshape(feats, &[bs, imgs_per_row * per, d])?;
        crate::model::image_tokens::splice(b, &emb, &feats, &runs)
    }

    /// Full forward over a prompt batch: final hidden states `[bs, s, d]`.
    pub fn forward_hidden(
        &self,
        b: &B,
        ids: &[u32],
        bs: usize,
        pixels: Option<&B::Tensor>,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<B::Tensor> {
        self.forward_hidden_masked(b, ids, bs, pixels, None, cache)
    }

    /// [`Self::forward_hidden`] with a patch mask for padded images (`None`: all real).
    pub fn forward_hidden_masked(
        &self,
        b: &B,
        ids: &[u32],
        bs: usize,
        pixels: Option<&B::Tensor>,
        mask: Option<&patches::PatchMask>,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<B::Tensor> {
        let feats = match pixels {
            Some(p) => Some(self.image_features_masked(b, p, mask)?),
            None => None,
        };
        let emb = self.embed_multimodal(b, ids, bs, feats.as_ref())?;
        self.text.forward(b, &emb, cache)
    }

    /// Decode step: `ids` embedded as plain tokens, as transformers does once the image is in
    /// the cache (a generated `<image>` id is just a token then, not a slot for features).
    pub fn forward_tokens(
        &self,
        b: &B,
        ids: &[u32],
        bs: usize,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<B::Tensor> {
        if bs == 0 || !ids.len().is_multiple_of(bs) {
            return Err(Error::Invalid(format!(
                "{} ids do not split into {bs} rows",
                ids.len()
            )));
        }
        let t = b.upload_ids(ids, &[bs, ids.len() / bs])?;
        let emb = self.text.embed_ids(b, &t)?;
        self.text.forward(b, &emb, cache)
    }

    pub fn logits(&self, b: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.lm_head.forward(b, hidden)
    }
}
