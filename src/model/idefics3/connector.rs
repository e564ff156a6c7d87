//! `Idefics3Connector`: pixel shuffle (space-to-depth by `scale_factor`) then a bias-free
//! projection to the text model's width. The reshape/permute sequence follows
//! `Idefics3Connector.pixel_shuffle` step by step so token order matches transformers exactly.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::linear::Linear;
use crate::model::params::Params;

#[derive(Debug, Clone)]
pub struct Connector<B: Backend> {
    scale: usize,
    proj: Linear<B>,
}

impl<B: Backend> Connector<B> {
    pub fn load(
        p: &mut dyn Params<B>,
        prefix: &str,
        vision_hidden: usize,
        text_hidden: usize,
        scale: usize,
    ) -> Result<Self> {
        let proj = Linear::load(
            p,
            &format!("{prefix}.modality_projection.proj"),
            vision_hidden * scale * scale,
            text_hidden,
            false,
        )?;
        Ok(Self { scale, proj })
    }

    pub fn from_parts(scale: usize, proj: Linear<B>) -> Self {
        Self { scale, proj }
    }

    /// `[n, seq, d] -> [n, seq / s², d·s²]`.
    pub fn pixel_shuffle(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let sh = b.shape(x);
        let (n, seq, d) = match sh.as_slice() {
            [n, seq, d] => (*n, *seq, *d),
            _ => {
                return Err(Error::Invalid(format!(
                    "pixel_shuffle expects rank 3, got {sh:?}"
                )))
            }
        };
        let s = self.scale;
        let side = (seq as f64).sqrt() as usize;
        if side * side != seq || !side.is_multiple_of(s) {
            return Err(Error::Invalid(format!(
                "pixel_shuffle: {seq} tokens is not a square grid divisible by {s}"
            )));
        }
        let x = b.reshape(x, &[n, side, side / s, d * s])?;
        let x = b.permute(&x, &[0, 2, 1, 3])?;
        let x = b.reshape(&x, &[n, side / s, side / s, d * s * s])?;
        let x = b.permute(&x, &[0, 2, 1, 3])?;
        b.reshape(&x, &[n, seq / (s * s), d * s * s])
    }

    pub fn forward(&self, b: &B, x: &B::Tensor) -> Result<B::Tensor> {
        self.proj.forward(b, &self.pixel_shuffle(b, x)?)
    }
}
