//! Datasets and evaluation.

pub mod accuracy;
pub mod ood;
pub mod predict;
pub mod reliability;
pub mod shapes;
