//! The auxiliary per-image-token loss: a linear probe on the connector's output that names the
//! kind and colour of the object under each image token.
//!
//! Why: trained only through one-token answers, the model learnt counting, colours and sizes
//! but never shape names (24.6% against 20% chance at 6000 steps), although the same vision
//! tower with a mean-pool classifier learns shapes in 500 steps (MODEL_CARD.md, "Training
//! notes"). The answer's gradient reaches the vision tower only through attention that has not
//! yet learnt where to look; this probe gives every image token a direct target from step 0.
//! The probe exists only during training and is not saved, so the shipped checkpoint stays a
//! plain `Idefics3ForConditionalGeneration`.

use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::batch::{Batch, NO_OBJECT_COLOR, NO_OBJECT_KIND};
use crate::error::{Error, Result};

/// Classes of the two heads: each kind plus "none", each colour plus "none".
const KIND_CLASSES: usize = NO_OBJECT_KIND as usize + 1;
const COLOR_CLASSES: usize = NO_OBJECT_COLOR as usize + 1;

/// One linear map `[KIND_CLASSES + COLOR_CLASSES, hidden]` (no bias: the features are the
/// connector's projection, which has none either, and "none" is learnt from the features).
pub struct AuxHead {
    pub weight: Var,
}

impl AuxHead {
    pub fn new(hidden: usize, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa0c5);
        let d = Normal::new(0.0f32, 0.02).map_err(|e| Error::Train(e.to_string()))?;
        let n = (KIND_CLASSES + COLOR_CLASSES) * hidden;
        let data: Vec<f32> = (0..n).map(|_| d.sample(&mut rng)).collect();
        let t = Tensor::from_vec(
            data,
            (KIND_CLASSES + COLOR_CLASSES, hidden),
            &candle_core::Device::Cpu,
        )?;
        Ok(Self {
            weight: Var::from_tensor(&t)?,
        })
    }

    /// Mean of the two heads' cross-entropies over every image token of the batch.
    /// `features`: the connector's output `[rows, tokens, hidden]`, tokens in the cell order of
    /// `Batch::cell_kinds`.
    pub fn loss(&self, features: &Tensor, b: &Batch) -> Result<Tensor> {
        let (rows, tokens, hidden) = features.dims3()?;
        if rows * tokens != b.cell_kinds.len() || b.cell_kinds.len() != b.cell_colors.len() {
            return Err(Error::Train(format!(
                "{rows}x{tokens} image tokens but {} cell targets",
                b.cell_kinds.len()
            )));
        }
        let f = features.reshape((rows * tokens, hidden))?;
        let logits = f.matmul(&self.weight.as_tensor().t()?)?;
        let dev = features.device();
        let kinds = Tensor::from_slice(&b.cell_kinds, b.cell_kinds.len(), dev)?;
        let colors = Tensor::from_slice(&b.cell_colors, b.cell_colors.len(), dev)?;
        let k = candle_nn::loss::cross_entropy(&logits.narrow(1, 0, KIND_CLASSES)?, &kinds)?;
        let c = candle_nn::loss::cross_entropy(
            &logits.narrow(1, KIND_CLASSES, COLOR_CLASSES)?,
            &colors,
        )?;
        Ok(((k + c)? * 0.5)?)
    }
}
