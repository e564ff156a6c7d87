//! WebGPU backend (wgpu): device setup, buffers, pipeline cache, async readback and the WGSL
//! kernels. Natively it runs on Vulkan/Metal/DX12 (lavapipe in CI), in the browser on WebGPU.
//!
//! [`WgpuBackend`] implements the [`Backend`](super::Backend) trait, so the one model
//! definition runs on it. Kernels are tested one by one against the CPU reference
//! (`tests/gpu_kernels.rs`) and the whole model against the CPU backend (`tests/gpu_backend.rs`).

// On wasm32 wgpu's handles are neither Send nor Sync (the page has one thread per worker), so
// the Arcs that let native callers share a context between threads are plain shared handles.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

mod backend;
mod context;
mod device;
pub mod kernels;
mod oneshot;

pub use backend::{WgpuBackend, WgpuTensor};
pub use context::{GpuBuffer, GpuContext, GpuOptions, KernelKey};
pub use device::DeviceInfo;
