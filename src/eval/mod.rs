//! Datasets and evaluation.

pub mod accuracy;
pub mod shapes;
