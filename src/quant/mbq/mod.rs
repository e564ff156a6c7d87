//! MBQ (thu-nics/MBQ, CVPR 2025): modality-balanced, activation-aware scale search.
//!
//! AWQ's observation is that a few input channels carry large activations, and scaling those
//! columns up before rounding (and the previous op down, so the network is unchanged) protects
//! them. MBQ adds that the loss is far less sensitive to errors on vision tokens than on text
//! tokens, so the search weighs the vision-token output error by the measured gradient ratio `r`
//! instead of treating every token alike. Steps:
//! 1. [`calibrate`]: one forward/backward pass of the answer loss on `train`-split samples,
//!    recording each text linear's input and the gradient at `o_proj` / `down_proj` outputs.
//! 2. [`search_and_fold`]: per layer and per scaled group, grid-search `alpha`, then fold the
//!    winning scales into the weights (the caller then rounds them with RTN).
//!
//! Only step 1 depends on the architecture — how a sample becomes a loss, and where the
//! decoder's layers are named — so it is a [`CalibrationSource`] per family
//! ([`Idefics3Source`], [`Qwen2VlSource`]); the search, the groups and the folding are shared,
//! on a [`DecoderLayout`] (Llama and Qwen2 name their layers alike under different prefixes).

mod calibrate;
mod idefics3;
mod layout;
mod qwen2vl;
mod search;

use std::collections::BTreeMap;

pub use calibrate::{calibrate, CalibStep, Calibration, CalibrationSource};
pub use idefics3::Idefics3Source;
pub use layout::{fold, DecoderLayout, Group};
pub use qwen2vl::Qwen2VlSource;
pub use search::{search_and_fold, weighted_error, ScaleChoice, ALPHA_GRID};

use crate::backend::HostTensor;
use crate::error::{Error, Result};

/// Host weights by Hugging Face name; scales are folded into them in place.
pub type HostWeights = BTreeMap<String, HostTensor>;

pub fn get<'a>(w: &'a HostWeights, name: &str) -> Result<&'a HostTensor> {
    w.get(name)
        .ok_or_else(|| Error::MissingTensor { name: name.into() })
}
