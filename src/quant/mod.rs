//! Post-training quantization: the packed int-N layout, its quantizers (RTN, HQQ, MBQ) and the
//! fused dequantize-and-multiply kernels.

pub mod hqq;
pub mod hqq_params;
pub mod kernels;
pub mod load_time;
pub mod packed;
pub mod rtn;
pub mod spec;

pub use packed::PackedTensor;
pub use spec::{Method, QuantSpec};
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod mbq;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod pipeline;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod pipeline_qwen2vl;
