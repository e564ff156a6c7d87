//! Adapter and device setup, and the translation of wgpu's failures into [`Error::Gpu`].
//!
//! The device is requested with the adapter's *own* limits and only the optional features the
//! adapter reports, never more: asking for more fails on some adapters (SwiftShader has no
//! `shader-f16`, wgpu on the web reports no `subgroups`), asking for less (the WebGPU defaults)
//! would cap storage bindings at 128 MiB even where the adapter allows 1 GiB or more.
//!
//! wgpu's default handler for uncaught errors panics; we install one that records the first
//! error instead, and every operation of [`GpuContext`](super::GpuContext) turns a recorded error
//! or a device loss into a typed error.

use std::sync::{Arc, Mutex};

use crate::error::{Error, GpuErrorKind, Result};

/// What the device was created with, for choosing kernel variants (f16, subgroups) and tile
/// sizes, and for refusing work the device cannot take.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Adapter name and backend as wgpu reports them ("llvmpipe (LLVM 15.0.6, 256 bits)", Vulkan).
    pub adapter: String,
    pub backend: String,
    /// Software adapters (lavapipe, SwiftShader) are correct but slow; callers may prefer CPU.
    pub is_software: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub limits: ::wgpu::Limits,
}

/// Errors reported by wgpu after the fact (uncaptured errors, device loss), shared with the
/// callbacks wgpu invokes, which may run on another thread natively.
#[derive(Debug, Default)]
pub(crate) struct ErrorSink {
    first: Mutex<Option<Error>>,
    lost: Mutex<Option<String>>,
}

impl ErrorSink {
    fn record(&self, e: Error) {
        if let Ok(mut slot) = self.first.lock() {
            slot.get_or_insert(e);
        }
    }

    pub(crate) fn record_lost(&self, msg: String) {
        if let Ok(mut slot) = self.lost.lock() {
            slot.get_or_insert(msg);
        }
    }

    /// `Err` once the device is lost (for good) or an error was recorded (taken, so the next
    /// operation may succeed again).
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(msg) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::gpu(
                GpuErrorKind::DeviceLost,
                format!("{msg}; create a new GPU context (or fall back to the CPU backend)"),
            ));
        }
        match self.first.lock().ok().and_then(|mut f| f.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Map a wgpu error to ours. Validation errors that name a limit become `LimitExceeded`, so a
/// caller can retry with smaller pieces.
pub(crate) fn from_wgpu(e: ::wgpu::Error) -> Error {
    match e {
        ::wgpu::Error::OutOfMemory { .. } => Error::gpu(
            GpuErrorKind::OutOfMemory,
            "the device ran out of memory; use a smaller model or fewer bits per weight",
        ),
        ::wgpu::Error::Validation { description, .. } => {
            let kind = if description.to_ascii_lowercase().contains("limit") {
                GpuErrorKind::LimitExceeded
            } else {
                GpuErrorKind::Other
            };
            Error::gpu(kind, format!("validation: {description}"))
        }
        ::wgpu::Error::Internal { description, .. } => {
            Error::gpu(GpuErrorKind::Other, format!("internal: {description}"))
        }
    }
}

/// Why there is no adapter and what to install, per target.
fn no_adapter(detail: &str) -> Error {
    let fix = if cfg!(target_arch = "wasm32") {
        "this browser exposes no WebGPU adapter (Chromium headless needs --enable-unsafe-webgpu); \
         use the CPU backend"
    } else {
        "no Vulkan/Metal/DX12 driver found; on Debian/Ubuntu without a GPU run \
         `apt-get install mesa-vulkan-drivers` (lavapipe), or use the CPU backend"
    };
    Error::gpu(GpuErrorKind::NoAdapter, format!("{detail}: {fix}"))
}

/// The optional features we use when the adapter has them; nothing else is ever requested.
fn wanted_features(adapter: ::wgpu::Features) -> ::wgpu::Features {
    adapter & (::wgpu::Features::SHADER_F16 | ::wgpu::Features::SUBGROUP)
}

/// Create the instance, pick the adapter and open the device.
pub(crate) async fn open(
    opts: &super::GpuOptions,
) -> Result<(::wgpu::Device, ::wgpu::Queue, DeviceInfo, Arc<ErrorSink>)> {
    // On the web `Instance::new` panics without `navigator.gpu` (wgpu 30), so ask first.
    #[cfg(target_arch = "wasm32")]
    if !::wgpu::util::is_browser_webgpu_supported().await {
        return Err(no_adapter("navigator.gpu is missing or offers no adapter"));
    }
    let instance = ::wgpu::Instance::new(::wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = instance
        .request_adapter(&::wgpu::RequestAdapterOptions {
            power_preference: ::wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            // We want the adapter's real limits, not a fingerprinting-safe bucket of them.
            apply_limit_buckets: false,
        })
        .await
        .map_err(|e| no_adapter(&format!("no GPU adapter ({e})")))?;
    let ai = adapter.get_info();
    let features = wanted_features(adapter.features());
    let mut limits = adapter.limits();
    if let Some(cap) = opts.max_storage_binding {
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap);
    }
    let (device, queue) = adapter
        .request_device(&::wgpu::DeviceDescriptor {
            label: Some("relvqa"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: ::wgpu::ExperimentalFeatures::disabled(),
            memory_hints: ::wgpu::MemoryHints::Performance,
            trace: ::wgpu::Trace::Off,
        })
        .await
        .map_err(|e| {
            Error::gpu(
                GpuErrorKind::Other,
                format!("adapter `{}` refused a device: {e}", ai.name),
            )
        })?;

    let sink = Arc::new(ErrorSink::default());
    let s = sink.clone();
    device.on_uncaptured_error(Arc::new(move |e| s.record(from_wgpu(e))));
    let s = sink.clone();
    device.set_device_lost_callback(move |reason, msg| {
        s.record_lost(format!("device lost ({reason:?}): {msg}"))
    });

    #[cfg(target_arch = "wasm32")]
    let name = match ai.name.as_str() {
        "" => browser_adapter_name()
            .await
            .unwrap_or_else(|| "unnamed WebGPU adapter".into()),
        name => name.to_owned(),
    };
    #[cfg(not(target_arch = "wasm32"))]
    let name = ai.name.clone();
    let info = DeviceInfo {
        adapter: name,
        backend: format!("{:?}", ai.backend),
        is_software: ai.device_type == ::wgpu::DeviceType::Cpu,
        shader_f16: features.contains(::wgpu::Features::SHADER_F16),
        // The reductions assume a subgroup fits in a 64-invocation workgroup.
        subgroups: features.contains(::wgpu::Features::SUBGROUP) && ai.subgroup_max_size <= 64,
        limits,
    };
    Ok((device, queue, info, sink))
}

/// The adapter's name as the browser gives it. wgpu takes only `GPUAdapterInfo.description`,
/// which Chromium leaves empty (fingerprinting), while `vendor` and `architecture` say e.g.
/// "google swiftshader"; so ask the browser for the same adapter again and join what it says.
#[cfg(target_arch = "wasm32")]
async fn browser_adapter_name() -> Option<String> {
    use wasm_bindgen::{JsCast, JsValue};
    let get = |o: &JsValue, key: &str| {
        js_sys::Reflect::get(o, &JsValue::from_str(key))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    let gpu = get(&get(&js_sys::global().into(), "navigator")?, "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"powerPreference".into(), &"high-performance".into()).ok()?;
    let promise: js_sys::Promise = request.call1(&gpu, &opts).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    let info = get(&adapter, "info")?;
    let parts: Vec<String> = ["vendor", "architecture", "device", "description"]
        .iter()
        .filter_map(|k| get(&info, k)?.as_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_features_the_adapter_has_are_requested() {
        let none = wanted_features(::wgpu::Features::empty());
        assert!(none.is_empty());
        let all = wanted_features(::wgpu::Features::all());
        assert_eq!(
            all,
            ::wgpu::Features::SHADER_F16 | ::wgpu::Features::SUBGROUP
        );
    }

    #[test]
    fn limit_validation_errors_are_typed() {
        let e = from_wgpu(::wgpu::Error::Validation {
            source: Box::new(std::fmt::Error),
            description: "Buffer binding size exceeds the limit".into(),
        });
        assert!(matches!(
            e,
            Error::Gpu {
                kind: GpuErrorKind::LimitExceeded,
                ..
            }
        ));
    }
}
