//! The GPU context: buffers, the pipeline cache, recording of dispatches and async readback.
//!
//! Dispatches are *recorded*, not submitted one by one: each appends a command buffer to a
//! pending list that is submitted in one go when something is read back (or on [`flush`]).
//! Uploads go into *fresh* buffers, never into one a recorded pass may read: `queue.write_buffer`
//! runs at the start of the next submit, before the recorded passes, which is only right for a
//! buffer no recorded pass knows yet. They are written in slices with `write_buffer` rather than
//! mapped at creation because on the web a mapped range is a temporary copy of the whole buffer
//! inside wasm memory: a 113 MB embedding cost 113 MB more of the tab's memory, which never
//! shrinks (small uniform buffers are still mapped: they are tiny and their bind group is
//! recorded at once).
//!
//! Readback is async on every target, as the browser's `mapAsync` is; natively the future polls
//! the device until the copy is done, so `pollster::block_on` works there. One code path, unlike
//! a sync-native/async-web pair that has to be kept in step.
//!
//! [`flush`]: GpuContext::flush

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use super::device::{self, DeviceInfo, ErrorSink};
use super::oneshot::oneshot;
use crate::error::{Error, GpuErrorKind, Result};

/// A storage buffer of `len` 32-bit elements (f32 or u32; the kernel decides). Its byte size is
/// rounded up to 16 so that any buffer can be bound as `array<vec4<..>>`. Clones share the
/// buffer; when the last clone drops, an output buffer returns to the context's pool.
#[derive(Debug, Clone)]
pub struct GpuBuffer {
    slot: Arc<Slot>,
    len: usize,
}

#[derive(Debug)]
struct Slot {
    buffer: ::wgpu::Buffer,
    size: u64,
    pool: Weak<Pool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give(self.size, self.buffer.clone());
        }
    }
}

impl GpuBuffer {
    /// Number of 32-bit elements (without the padding).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn raw(&self) -> &::wgpu::Buffer {
        &self.slot.buffer
    }
}

/// Free storage buffers by byte size. A decode step asks for the same sizes as the one before
/// it, so reusing them saves an allocation per op; reuse is safe without fences because every
/// op is recorded into one queue in order, so a buffer's last reader runs before its next writer.
#[derive(Debug, Default)]
struct Pool {
    free: Mutex<(HashMap<u64, Vec<::wgpu::Buffer>>, u64)>,
}

/// The most bytes the pool keeps; beyond it freed buffers are released to the driver.
const POOL_BYTES: u64 = 256 << 20;

impl Pool {
    fn give(&self, size: u64, buffer: ::wgpu::Buffer) {
        if let Ok(mut g) = self.free.lock() {
            let (map, total) = &mut *g;
            if *total + size <= POOL_BYTES {
                *total += size;
                map.entry(size).or_default().push(buffer);
            }
        }
    }

    fn take(&self, size: u64) -> Option<::wgpu::Buffer> {
        let mut g = self.free.lock().ok()?;
        let (map, total) = &mut *g;
        let b = map.get_mut(&size)?.pop()?;
        *total -= size;
        Some(b)
    }

    fn clear(&self) {
        if let Ok(mut g) = self.free.lock() {
            *g = Default::default();
        }
    }
}

/// Options for opening a context.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Cap `maxStorageBufferBindingSize` below the adapter's (the device then enforces it), to
    /// exercise the splitting of large tensors on a small model, or to mimic a smaller device.
    pub max_storage_binding: Option<u64>,
    /// Use the workgroup-memory reductions even where the device has subgroups (to test and
    /// compare both paths on one machine).
    pub no_subgroups: bool,
}

/// Pipeline-cache key: the kernel's name and its specialisation (WGSL `override` constants such
/// as the bit width). Shapes are uniforms, not part of the key, so one pipeline serves every
/// shape of a kernel variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub name: &'static str,
    pub constants: Vec<(&'static str, u32)>,
    /// The reduction file appended to the source ("" for kernels that do not reduce).
    reduce: &'static str,
}

impl KernelKey {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            constants: Vec::new(),
            reduce: "",
        }
    }

    pub fn with(mut self, constant: &'static str, value: u32) -> Self {
        self.constants.push((constant, value));
        self
    }
}

#[derive(Debug)]
pub struct GpuContext {
    device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    info: DeviceInfo,
    sink: Arc<ErrorSink>,
    /// Shader modules by (kernel, reduction file).
    modules: Mutex<HashMap<(&'static str, &'static str), ::wgpu::ShaderModule>>,
    /// Kernels that reduce use reduce_subgroup.wgsl (else reduce_workgroup.wgsl).
    subgroups: bool,
    pipelines: Mutex<HashMap<KernelKey, ::wgpu::ComputePipeline>>,
    /// What every dispatch records into until the next submit: a whole forward pass is one
    /// command buffer.
    pending: Mutex<Option<Recording>>,
    pool: Arc<Pool>,
}

pub(crate) fn poisoned<T>(_: T) -> Error {
    Error::gpu(
        GpuErrorKind::Other,
        "a GPU context lock was poisoned by an earlier panic; create a new context",
    )
}

/// Commands recorded since the last submit. Consecutive dispatches share one compute pass:
/// wgpu still places a barrier between dispatches that touch the same buffer, but a pass per
/// dispatch cost each small kernel of the decode step a pass begin and end as well. The pass
/// is ended before a copy is recorded, since the encoder is locked while a pass is open.
#[derive(Debug)]
struct Recording {
    pass: Option<::wgpu::ComputePass<'static>>,
    encoder: ::wgpu::CommandEncoder,
}

impl Recording {
    fn new(device: &::wgpu::Device) -> Self {
        Self {
            pass: None,
            encoder: device.create_command_encoder(&::wgpu::CommandEncoderDescriptor {
                label: Some("relvqa pass"),
            }),
        }
    }

    /// The encoder, for copies: ends the open compute pass first.
    fn encoder(&mut self) -> &mut ::wgpu::CommandEncoder {
        self.pass = None;
        &mut self.encoder
    }

    fn pass(&mut self) -> &mut ::wgpu::ComputePass<'static> {
        let encoder = &mut self.encoder;
        self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&::wgpu::ComputePassDescriptor::default())
                .forget_lifetime()
        })
    }

    fn finish(mut self) -> ::wgpu::CommandBuffer {
        self.pass = None;
        self.encoder.finish()
    }
}

const REDUCE_WORKGROUP: &str = include_str!("kernels/reduce_workgroup.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("kernels/reduce_subgroup.wgsl");

/// Bytes per `write_buffer` call of an upload: what a converting upload holds at once.
const UPLOAD_CHUNK_BYTES: usize = 4 << 20;

// Buffers are written from the host's bytes as they are; WGSL reads little-endian values.
#[cfg(target_endian = "big")]
compile_error!("the wgpu backend uploads host memory as is and needs a little-endian target");

const STORAGE: ::wgpu::BufferUsages = ::wgpu::BufferUsages::STORAGE
    .union(::wgpu::BufferUsages::COPY_SRC)
    .union(::wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    /// Open the default adapter. Fails with [`GpuErrorKind::NoAdapter`] (and the fix in the
    /// message) where there is none; callers fall back to the CPU backend on that kind.
    pub async fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::default()).await
    }

    pub async fn with_options(opts: &GpuOptions) -> Result<Self> {
        let (device, queue, info, sink) = device::open(opts).await?;
        let subgroups = info.subgroups && !opts.no_subgroups;
        Ok(Self {
            subgroups,
            device,
            queue,
            info,
            sink,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            pending: Mutex::default(),
            pool: Arc::default(),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Release the device now instead of when the last handle drops (a page freeing GPU memory
    /// before loading another model). Every later call fails with [`GpuErrorKind::DeviceLost`].
    pub fn destroy(&self) {
        self.pool.clear();
        self.device.destroy();
        // Natively wgpu reports the loss only at the next poll; we know it now.
        self.sink
            .record_lost("the device was destroyed by GpuContext::destroy".into());
    }

    /// The error to report for a failure whose cause may be a device loss that wgpu has not
    /// reported yet: natively the lost callback only runs when the device is polled.
    fn failure(&self, what: String) -> Error {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(::wgpu::PollType::Poll);
        self.sink
            .check()
            .err()
            .unwrap_or_else(|| Error::gpu(GpuErrorKind::Other, what))
    }

    pub fn limits(&self) -> &::wgpu::Limits {
        &self.info.limits
    }

    /// The most bytes one storage binding may hold on this device.
    pub fn max_binding(&self) -> u64 {
        let l = &self.info.limits;
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }

    /// Refuse a storage buffer the device cannot bind rather than let wgpu fail later. The
    /// backend splits weight tensors before they get here (`WgpuBackend::upload`).
    fn check_storage_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.max_binding();
        if bytes > max {
            return Err(Error::gpu(
                GpuErrorKind::LimitExceeded,
                format!(
                    "{what} needs {bytes} bytes, more than this adapter binds at once ({max}); \
                     only weights are split across bindings: use a smaller model or the CPU backend"
                ),
            ));
        }
        Ok(())
    }

    fn padded(len: usize) -> u64 {
        (len.max(1) as u64 * 4).div_ceil(16) * 16
    }

    /// A fresh storage buffer for `len` 32-bit values (see the module doc for why fresh).
    fn fresh_storage(&self, label: &str, len: usize) -> Result<(::wgpu::Buffer, u64)> {
        let size = Self::padded(len);
        self.check_storage_size(label, size)?;
        self.sink.check()?;
        let buffer = self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Ok((buffer, size))
    }

    /// `values` into a fresh buffer, written straight from the caller's slice.
    fn upload_words<T: bytemuck::Pod>(&self, label: &str, values: &[T]) -> Result<GpuBuffer> {
        let (buffer, size) = self.fresh_storage(label, values.len())?;
        let bytes: &[u8] = bytemuck::cast_slice(values);
        for (i, chunk) in bytes.chunks(UPLOAD_CHUNK_BYTES).enumerate() {
            self.queue
                .write_buffer(&buffer, (i * UPLOAD_CHUNK_BYTES) as u64, chunk);
        }
        self.sink.check()?;
        Ok(self.wrap(buffer, size, values.len()))
    }

    /// `len` 32-bit values that `fill(range, out)` computes a slice at a time (f16 weights
    /// widened to f32, or packed into f16 pairs): the host never holds the converted tensor
    /// whole, only one slice of it.
    pub fn upload_generated(
        &self,
        label: &str,
        len: usize,
        mut fill: impl FnMut(std::ops::Range<usize>, &mut Vec<u32>),
    ) -> Result<GpuBuffer> {
        let (buffer, size) = self.fresh_storage(label, len)?;
        let per = UPLOAD_CHUNK_BYTES / 4;
        let mut out = Vec::with_capacity(per.min(len));
        let mut start = 0;
        while start < len {
            let end = (start + per).min(len);
            out.clear();
            fill(start..end, &mut out);
            if out.len() != end - start {
                return Err(self.failure(format!(
                    "uploading `{label}`: {} values generated for {}",
                    out.len(),
                    end - start
                )));
            }
            self.queue
                .write_buffer(&buffer, start as u64 * 4, bytemuck::cast_slice(&out));
            start = end;
        }
        self.sink.check()?;
        Ok(self.wrap(buffer, size, len))
    }

    fn wrap(&self, buffer: ::wgpu::Buffer, size: u64, len: usize) -> GpuBuffer {
        GpuBuffer {
            slot: Arc::new(Slot {
                buffer,
                size,
                pool: Arc::downgrade(&self.pool),
            }),
            len,
        }
    }

    /// A buffer of `size` bytes starting with `bytes` (the rest zero), mapped at creation.
    /// Not `DeviceExt::create_buffer_init`: that one panics when the device is lost.
    fn buffer_with(
        &self,
        label: &str,
        size: u64,
        bytes: &[u8],
        usage: ::wgpu::BufferUsages,
    ) -> Result<::wgpu::Buffer> {
        self.sink.check()?;
        let buffer = self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .get_mapped_range_mut(..)
                .map_err(|e| self.failure(format!("creating `{label}`: {e}")))?;
            let mut dst = view.slice(..bytes.len());
            dst.copy_from_slice(bytes);
        }
        buffer.unmap();
        self.sink.check()?;
        Ok(buffer)
    }

    pub fn upload_f32(&self, label: &str, data: &[f32]) -> Result<GpuBuffer> {
        self.upload_words(label, data)
    }

    pub fn upload_u32(&self, label: &str, data: &[u32]) -> Result<GpuBuffer> {
        self.upload_words(label, data)
    }

    /// An output buffer of `len` elements, from the pool when one of that size is free. Its
    /// contents are undefined: kernels write every element of their outputs.
    pub fn storage(&self, label: &str, len: usize) -> Result<GpuBuffer> {
        let size = Self::padded(len);
        self.check_storage_size(label, size)?;
        self.sink.check()?;
        let buffer = match self.pool.take(size) {
            Some(b) => b,
            None => self.device.create_buffer(&::wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: STORAGE,
                mapped_at_creation: false,
            }),
        };
        self.sink.check()?;
        Ok(self.wrap(buffer, size, len))
    }

    /// Whether reducing kernels run on subgroup operations on this context.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }

    /// The pipeline of a kernel that calls `reduce_sum`/`reduce_max`: its source with the
    /// reduction file for this device appended.
    pub(crate) fn reduce_pipeline(
        &self,
        key: KernelKey,
        source: &'static str,
    ) -> Result<::wgpu::ComputePipeline> {
        let (file, text) = if self.subgroups {
            ("reduce_subgroup", REDUCE_SUBGROUP)
        } else {
            ("reduce_workgroup", REDUCE_WORKGROUP)
        };
        let key = KernelKey {
            reduce: file,
            ..key
        };
        self.build_pipeline(&key, || format!("{source}\n{text}"))
    }

    /// The compute pipeline for `key`, compiled from `source` once per key.
    pub(crate) fn pipeline(
        &self,
        key: &KernelKey,
        source: &'static str,
    ) -> Result<::wgpu::ComputePipeline> {
        self.build_pipeline(key, || source.to_string())
    }

    fn build_pipeline(
        &self,
        key: &KernelKey,
        source: impl FnOnce() -> String,
    ) -> Result<::wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.lock().map_err(poisoned)?.get(key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().map_err(poisoned)?;
            match modules.get(&(key.name, key.reduce)) {
                Some(m) => m.clone(),
                None => {
                    let m = self
                        .device
                        .create_shader_module(::wgpu::ShaderModuleDescriptor {
                            label: Some(key.name),
                            source: ::wgpu::ShaderSource::Wgsl(source().into()),
                        });
                    self.sink.check()?;
                    modules.insert((key.name, key.reduce), m.clone());
                    m
                }
            }
        };
        self.finish_pipeline(key, &module)
    }

    fn finish_pipeline(
        &self,
        key: &KernelKey,
        module: &::wgpu::ShaderModule,
    ) -> Result<::wgpu::ComputePipeline> {
        let constants: Vec<(&str, f64)> =
            key.constants.iter().map(|&(n, v)| (n, v as f64)).collect();
        let pipeline = self
            .device
            .create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                label: Some(key.name),
                layout: None,
                module,
                entry_point: Some("main"),
                compilation_options: ::wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    // Kernels initialise the workgroup memory they read.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        self.sink.check()?;
        self.pipelines
            .lock()
            .map_err(poisoned)?
            .insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    /// Workgroup grid for `groups` workgroups: `(x, y)` with `x * y >= groups`, since one
    /// dimension holds at most `maxComputeWorkgroupsPerDimension` (65535 by default). Kernels
    /// compute their linear index as `wid.x + wid.y * nwg.x` and skip indices past the end.
    pub(crate) fn grid(&self, what: &str, groups: usize) -> Result<(u32, u32)> {
        let max = self.info.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        let groups = groups.max(1);
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(Error::gpu(
                GpuErrorKind::LimitExceeded,
                format!("{what}: {groups} workgroups exceed a {max} x {max} grid"),
            ));
        }
        Ok((x as u32, y as u32))
    }

    /// Record one dispatch of `pipeline`: binding 0 is the uniform `params`, bindings 1.. are
    /// `buffers` in order (the convention every kernel file follows).
    pub(crate) fn dispatch(
        &self,
        pipeline: &::wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&GpuBuffer],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.sink.check()?;
        let bytes: Vec<u8> = params.iter().flat_map(|v| v.to_le_bytes()).collect();
        let size = (bytes.len() as u64).div_ceil(16).max(1) * 16;
        let uniform = self.buffer_with("params", size, &bytes, ::wgpu::BufferUsages::UNIFORM)?;
        let mut entries = vec![::wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(::wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.raw().as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        {
            let mut pending = self.pending.lock().map_err(poisoned)?;
            let pass = pending
                .get_or_insert_with(|| Recording::new(&self.device))
                .pass();
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        self.sink.check()
    }

    /// Record a plain copy of `src` into `dst` (the driver's copy, no kernel): what
    /// `relvqa bench kernels` measures the device's memory bandwidth with.
    pub fn copy_buffer(&self, src: &GpuBuffer, dst: &GpuBuffer) -> Result<()> {
        let size = src.slot.size.min(dst.slot.size);
        let mut pending = self.pending.lock().map_err(poisoned)?;
        pending
            .get_or_insert_with(|| Recording::new(&self.device))
            .encoder()
            .copy_buffer_to_buffer(src.raw(), 0, dst.raw(), 0, size);
        drop(pending);
        self.sink.check()
    }

    /// Submit everything recorded so far.
    pub fn flush(&self) -> Result<()> {
        let recording = self.pending.lock().map_err(poisoned)?.take();
        if let Some(r) = recording {
            self.queue.submit([r.finish()]);
        }
        self.sink.check()
    }

    /// Read `buf` back as f32 after everything recorded so far has run.
    pub fn read_f32<'a>(&'a self, buf: &GpuBuffer) -> impl Future<Output = Result<Vec<f32>>> + 'a {
        let len = buf.len;
        let size = Self::padded(len);
        let staging = self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let recorded = self.pending.lock().map_err(poisoned).map(|mut p| {
            p.get_or_insert_with(|| Recording::new(&self.device))
                .encoder()
                .copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, size)
        });
        let (tx, rx) = oneshot();
        let submitted = recorded.and_then(|_| self.flush());
        if submitted.is_ok() {
            staging
                .slice(..)
                .map_async(::wgpu::MapMode::Read, move |r| tx.send(r));
        }
        async move {
            submitted?;
            // Natively nothing drives wgpu's callbacks but polling; in the browser the
            // callback runs from the event loop and `poll` is a no-op.
            #[cfg(not(target_arch = "wasm32"))]
            self.device
                .poll(::wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::gpu(GpuErrorKind::Other, format!("poll: {e}")))?;
            let mapped = rx.await?;
            self.sink.check()?;
            mapped.map_err(|e| self.failure(format!("reading a buffer back: {e}")))?;
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| self.failure(format!("mapping a read-back buffer: {e}")))?;
            let out: Vec<f32> = view
                .chunks_exact(4)
                .take(len)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            drop(view);
            staging.unmap();
            Ok(out)
        }
    }
}
