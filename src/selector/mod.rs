//! Confidence and abstention. For now the confidence is MaxProb (the answer's probability);
//! the learned Selector joins it here.

pub mod threshold;
