//! WebGPU backend (wgpu): device setup, buffers, pipeline cache, async readback and the WGSL
//! kernels. Natively it runs on Vulkan/Metal/DX12 (lavapipe in CI), in the browser on WebGPU.
//!
//! Status: the foundation only. Kernels are tested one by one against the CPU reference
//! (`tests/gpu_kernels.rs`); the [`Backend`](super::Backend) trait is not implemented yet, so
//! the model cannot run on it.

mod context;
mod device;
pub mod kernels;
mod oneshot;

pub use context::{GpuBuffer, GpuContext, KernelKey};
pub use device::DeviceInfo;
