//! relvqa: reliable visual question answering with quantized multimodal LLMs, natively and in
//! the browser. See ARCHITECTURE.md for the data flow and where each part lives.

pub mod backend;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod cli;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod convert;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod package;
pub mod quant;
pub mod report;
pub mod selector;
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;
#[cfg(target_arch = "wasm32")]
pub mod web_bench;
#[cfg(target_arch = "wasm32")]
pub mod web_folder;
#[cfg(target_arch = "wasm32")]
pub mod web_stream;
#[cfg(target_arch = "wasm32")]
pub mod web_text;

pub use error::{Error, GpuErrorKind, Result};
