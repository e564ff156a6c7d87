//! Datasets and evaluation.

pub mod accuracy;
pub mod ood;
pub mod shapes;
