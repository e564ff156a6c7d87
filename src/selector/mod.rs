//! Confidence and abstention: MaxProb (the answer's probability) and the learned Selector
//! (an MLP over the model's own states), with thresholds chosen on val for a target risk or
//! for the best effective reliability.

pub mod decision;
pub mod features;
pub mod mlp;
pub mod store;
pub mod threshold;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod train;
