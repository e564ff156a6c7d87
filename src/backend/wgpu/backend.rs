//! [`Backend`] on wgpu: the model definition runs unchanged on Vulkan/Metal/DX12 natively
//! and on WebGPU in the browser.
//!
//! Tensors are f32 GPU buffers with a shape. Every op records a dispatch into the context's
//! one command encoder and returns at once; nothing reaches the host until [`Backend::read_f32`],
//! which submits the pass and maps the result asynchronously. Two kinds of tensor are not plain
//! contiguous buffers:
//! - a **KV-cache view** (`cap` set) lives in a buffer with room for `cap` positions along dim 2,
//!   so appending a token writes in place; attention reads it where it is, other ops copy it
//!   contiguous first;
//! - a **row-split weight** (an embedding table or linear weight larger than one storage
//!   binding may hold) is kept as row ranges in several buffers; only `linear`, `embedding`,
//!   `reshape` (keeping dim 0) and `read_f32` take it, every other op refuses it with
//!   [`GpuErrorKind::LimitExceeded`];
//! - a **half weight** (`Backend::upload_half_weight`: a linear weight from an f16 checkpoint)
//!   holds f16 pairs in u32 words, half the bytes, widened inside the GEMV and GEMM kernels;
//!   only `linear` and `read_f32` take it (it may also be row-split).

use std::future::Future;
use std::sync::Arc;

use super::kernels::{self as k, AttentionShape, BinaryOp, MatmulShape, UnaryOp, View};
use super::{GpuBuffer, GpuContext, GpuOptions};
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, GpuErrorKind, Result};
use crate::quant::PackedTensor;

/// Up to this many input rows a linear layer uses the GEMV kernels (decode); above, the tiled
/// GEMMs, which read each weight once per 16 rows instead of once per row.
const GEMV_MAX_ROWS: usize = 4;

#[derive(Debug, Clone)]
pub struct WgpuBackend {
    ctx: Arc<GpuContext>,
}

#[derive(Debug, Clone)]
enum Data {
    One(GpuBuffer),
    /// `(first row, rows, buffer)` parts of a tensor split along dim 0.
    Rows(Vec<(usize, usize, GpuBuffer)>),
}

#[derive(Debug, Clone)]
pub struct WgpuTensor {
    data: Data,
    shape: Vec<usize>,
    /// KV-cache view: the buffer is `[d0, d1, cap, d3]`, of which `shape[2]` positions are used.
    cap: Option<usize>,
    /// Token ids as uploaded, so `embedding` can check them against the vocabulary on the host.
    ids: Option<Arc<[u32]>>,
    /// The buffers hold f16 pairs (a half weight), not f32.
    half: bool,
}

impl WgpuTensor {
    fn dense(buf: GpuBuffer, shape: Vec<usize>) -> Self {
        Self {
            data: Data::One(buf),
            shape,
            cap: None,
            ids: None,
            half: false,
        }
    }

    /// A tensor over a buffer a kernel wrote directly (benchmarks, tests).
    pub fn from_buffer(buf: GpuBuffer, shape: Vec<usize>) -> Self {
        Self::dense(buf, shape)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// How many device buffers hold the tensor (more than one for a row-split weight).
    pub fn parts(&self) -> usize {
        match &self.data {
            Data::One(_) => 1,
            Data::Rows(p) => p.len(),
        }
    }
}

fn err(op: &'static str, msg: String) -> Error {
    Error::Backend {
        backend: "wgpu",
        op,
        msg,
    }
}

/// f16 values two to a u32 word, low half first (what `unpack2x16float` reads).
/// Two f16 values in one u32 word, the first in the low half: how WGSL's `unpack2x16float`
/// reads a half weight.
fn pack_half(lo: half::f16, hi: half::f16) -> u32 {
    lo.to_bits() as u32 | ((hi.to_bits() as u32) << 16)
}

/// The host values of an upload, before conversion.
#[derive(Clone, Copy)]
enum Values<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl<'a> Values<'a> {
    fn len(self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }

    fn slice(self, r: std::ops::Range<usize>) -> Values<'a> {
        match self {
            Values::F32(v) => Values::F32(&v[r]),
            Values::F16(v) => Values::F16(&v[r]),
        }
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `shape` without its last dimension, flattened: (rows, last).
fn rows_last(op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&d, lead)) => Ok((numel(lead), d)),
        None => Err(err(op, "needs at least one dimension".into())),
    }
}

impl WgpuBackend {
    /// Open the default adapter (see [`GpuContext::new`] for the failure kinds).
    pub async fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::default()).await
    }

    pub async fn with_options(opts: &GpuOptions) -> Result<Self> {
        Ok(Self::from_context(Arc::new(
            GpuContext::with_options(opts).await?,
        )))
    }

    pub fn from_context(ctx: Arc<GpuContext>) -> Self {
        Self { ctx }
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Buffer and strides of a single-buffer tensor, as it lies (a cache view keeps its gaps).
    fn view(&self, op: &'static str, t: &WgpuTensor) -> Result<(GpuBuffer, View)> {
        if t.half {
            return Err(err(
                op,
                format!(
                    "a half-precision {:?} weight only goes to linear layers",
                    t.shape
                ),
            ));
        }
        let buf = match &t.data {
            Data::One(b) => b.clone(),
            Data::Rows(parts) => {
                return Err(Error::gpu(
                    GpuErrorKind::LimitExceeded,
                    format!(
                        "{op} on a {:?} tensor split in {} parts to fit the device's storage \
                         bindings; only linear layers and embeddings take split tensors",
                        t.shape,
                        parts.len()
                    ),
                ))
            }
        };
        let view = match t.cap {
            Some(cap) if t.shape.len() == 4 => {
                let s = &t.shape;
                View::contiguous(&[s[0], s[1], cap, s[3]])
            }
            _ => View::contiguous(&t.shape),
        };
        Ok((buf, view))
    }

    /// A contiguous buffer with the tensor's values (a copy only for a cache view).
    fn buf(&self, op: &'static str, t: &WgpuTensor) -> Result<GpuBuffer> {
        let (buf, view) = self.view(op, t)?;
        if t.cap.is_none_or(|c| t.shape.get(2) == Some(&c)) {
            return Ok(buf);
        }
        let out = self.ctx.storage("contiguous", numel(&t.shape))?;
        k::copy_strided(
            &self.ctx,
            &buf,
            &view,
            &out,
            &View::contiguous(&t.shape),
            &t.shape,
        )?;
        Ok(out)
    }

    /// Upload `data` of `shape` (as f32, or as f16 pairs when `half`), split along dim 0 when
    /// it exceeds one storage binding.
    fn upload_split(&self, shape: &[usize], data: Values<'_>, half: bool) -> Result<WgpuTensor> {
        let up = |label: &str, v: Values<'_>| match (v, half) {
            (Values::F32(v), false) => self.ctx.upload_f32(label, v),
            (Values::F32(v), true) => {
                self.ctx
                    .upload_generated(label, v.len().div_ceil(2), |r, out| {
                        out.extend(r.map(|i| {
                            let pair = &v[2 * i..(2 * i + 2).min(v.len())];
                            pack_half(
                                half::f16::from_f32(pair[0]),
                                pair.get(1)
                                    .map_or(half::f16::ZERO, |h| half::f16::from_f32(*h)),
                            )
                        }))
                    })
            }
            (Values::F16(v), false) => self.ctx.upload_generated(label, v.len(), |r, out| {
                out.extend(v[r].iter().map(|h| h.to_f32().to_bits()))
            }),
            (Values::F16(v), true) => {
                self.ctx
                    .upload_generated(label, v.len().div_ceil(2), |r, out| {
                        out.extend(r.map(|i| {
                            let pair = &v[2 * i..(2 * i + 2).min(v.len())];
                            pack_half(pair[0], pair.get(1).copied().unwrap_or(half::f16::ZERO))
                        }))
                    })
            }
        };
        let data_len = data.len();
        let value_bytes: u64 = if half { 2 } else { 4 };
        let bytes = data_len as u64 * value_bytes;
        let max = self.ctx.max_binding();
        let mut t = if bytes <= max || shape.len() < 2 {
            WgpuTensor::dense(up("tensor", data)?, shape.to_vec())
        } else {
            let row = numel(&shape[1..]).max(1);
            // Whole rows per part, a multiple of 8 so parts stay 16-byte aligned.
            let per = ((max / value_bytes) as usize / row) & !7;
            if per == 0 {
                return Err(Error::gpu(
                    GpuErrorKind::LimitExceeded,
                    format!(
                        "eight rows of a {shape:?} tensor ({} bytes) exceed the device's storage \
                         binding limit of {max} bytes",
                        8 * row as u64 * value_bytes
                    ),
                ));
            }
            let mut parts = Vec::new();
            let mut start = 0;
            while start < shape[0] {
                let rows = per.min(shape[0] - start);
                let buf = up("tensor part", data.slice(start * row..(start + rows) * row))?;
                parts.push((start, rows, buf));
                start += rows;
            }
            WgpuTensor {
                data: Data::Rows(parts),
                shape: shape.to_vec(),
                cap: None,
                ids: None,
                half: false,
            }
        };
        t.half = half;
        Ok(t)
    }

    fn binary(&self, op: BinaryOp, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        let (ba, bb) = (self.buf("binary", a)?, self.buf("binary", b)?);
        let (y, shape) = k::binary(&self.ctx, op, &ba, &a.shape, &bb, &b.shape)?;
        Ok(WgpuTensor::dense(y, shape))
    }

    /// `x [m, k] · wᵀ` for one dense weight buffer `w [n, k]` (f32, or f16 pairs when `half`).
    fn linear_one(
        &self,
        x: &GpuBuffer,
        (w, half): (&GpuBuffer, bool),
        m: usize,
        n: usize,
        kk: usize,
    ) -> Result<GpuBuffer> {
        if m <= GEMV_MAX_ROWS && k::gemv_fits(kk, half) {
            return k::gemv(&self.ctx, x, w, half, (m, n, kk));
        }
        k::matmul(
            &self.ctx,
            x,
            w,
            MatmulShape {
                batch: 1,
                m,
                n,
                k: kk,
                b_trans: true,
                b_batched: false,
                b_f16: half,
            },
        )
    }

    fn add_bias(&self, y: WgpuTensor, bias: Option<&WgpuTensor>) -> Result<WgpuTensor> {
        match bias {
            Some(b) => self.binary(BinaryOp::Add, &y, b),
            None => Ok(y),
        }
    }
}

impl Backend for WgpuBackend {
    type Tensor = WgpuTensor;
    type Packed = k::GpuPacked;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn upload(&self, t: &HostTensor) -> Result<WgpuTensor> {
        if numel(&t.shape) != t.data.len() {
            return Err(err(
                "upload",
                format!("shape {:?} with {} values", t.shape, t.data.len()),
            ));
        }
        self.upload_split(&t.shape, Values::F32(&t.data), false)
    }

    fn upload_half_weight(&self, t: &HostTensor) -> Result<WgpuTensor> {
        match t.shape.as_slice() {
            // f16 pairs: a row of odd length would start mid-word.
            [_, k] if k.is_multiple_of(2) && numel(&t.shape) == t.data.len() => {
                self.upload_split(&t.shape, Values::F32(&t.data), true)
            }
            _ => self.upload(t),
        }
    }

    fn upload_f16(&self, shape: &[usize], v: &[half::f16], weight: bool) -> Result<WgpuTensor> {
        if numel(shape) != v.len() {
            return Err(err(
                "upload_f16",
                format!("shape {shape:?} with {} values", v.len()),
            ));
        }
        let half = weight && matches!(shape, [_, k] if k.is_multiple_of(2));
        self.upload_split(shape, Values::F16(v), half)
    }

    fn upload_ids(&self, ids: &[u32], shape: &[usize]) -> Result<WgpuTensor> {
        if numel(shape) != ids.len() {
            return Err(err(
                "upload_ids",
                format!("shape {shape:?} with {} ids", ids.len()),
            ));
        }
        let buf = self.ctx.upload_u32("ids", ids)?;
        let mut t = WgpuTensor::dense(buf, shape.to_vec());
        t.ids = Some(ids.into());
        Ok(t)
    }

    fn shape(&self, t: &WgpuTensor) -> Vec<usize> {
        t.shape.clone()
    }

    fn read_f32(&self, t: &WgpuTensor) -> impl Future<Output = Result<HostTensor>> {
        // Record the copies now; the future only waits for them.
        let bufs: Result<Vec<GpuBuffer>> = match &t.data {
            Data::Rows(parts) => Ok(parts.iter().map(|(_, _, b)| b.clone()).collect()),
            Data::One(b) if t.half => Ok(vec![b.clone()]),
            Data::One(_) => self.buf("read_f32", t).map(|b| vec![b]),
        };
        let (shape, half) = (t.shape.clone(), t.half);
        let ctx = self.ctx.clone();
        async move {
            let mut data = Vec::with_capacity(numel(&shape));
            for b in bufs? {
                let words = ctx.read_f32(&b).await?;
                if half {
                    data.extend(words.iter().flat_map(|w| {
                        let bits = w.to_bits();
                        [bits as u16, (bits >> 16) as u16].map(|h| half::f16::from_bits(h).to_f32())
                    }));
                } else {
                    data.extend(words);
                }
            }
            data.truncate(numel(&shape));
            HostTensor::new(shape, data)
        }
    }

    fn reshape(&self, t: &WgpuTensor, shape: &[usize]) -> Result<WgpuTensor> {
        if numel(shape) != numel(&t.shape) {
            return Err(err(
                "reshape",
                format!(
                    "{:?} has {} values, {shape:?} needs {}",
                    t.shape,
                    numel(&t.shape),
                    numel(shape)
                ),
            ));
        }
        if matches!(t.data, Data::Rows(_)) || t.half {
            if shape.first() != t.shape.first() || shape.last() != t.shape.last() {
                return Err(err(
                    "reshape",
                    format!(
                        "a row-split or half {:?} weight keeps its first and last dimensions",
                        t.shape
                    ),
                ));
            }
            let mut r = t.clone();
            r.shape = shape.to_vec();
            return Ok(r);
        }
        let mut r = WgpuTensor::dense(self.buf("reshape", t)?, shape.to_vec());
        r.ids = t.ids.clone();
        Ok(r)
    }

    fn permute(&self, t: &WgpuTensor, dims: &[usize]) -> Result<WgpuTensor> {
        let rank = t.shape.len();
        let mut seen = vec![false; rank];
        if dims.len() != rank
            || dims
                .iter()
                .any(|&d| d >= rank || std::mem::replace(&mut seen[d], true))
        {
            return Err(err(
                "permute",
                format!("{dims:?} is not a permutation of {rank} dims"),
            ));
        }
        let (buf, view) = self.view("permute", t)?;
        let shape: Vec<usize> = dims.iter().map(|&d| t.shape[d]).collect();
        let from = View {
            offset: view.offset,
            strides: dims.iter().map(|&d| view.strides[d]).collect(),
        };
        let out = self.ctx.storage("permute out", numel(&shape))?;
        k::copy_strided(
            &self.ctx,
            &buf,
            &from,
            &out,
            &View::contiguous(&shape),
            &shape,
        )?;
        Ok(WgpuTensor::dense(out, shape))
    }

    fn narrow(&self, t: &WgpuTensor, dim: usize, start: usize, len: usize) -> Result<WgpuTensor> {
        if dim >= t.shape.len() || start + len > t.shape[dim] || len == 0 {
            return Err(err(
                "narrow",
                format!("{start}..{} of dim {dim} of {:?}", start + len, t.shape),
            ));
        }
        let (buf, mut view) = self.view("narrow", t)?;
        view.offset += start * view.strides[dim];
        let mut shape = t.shape.clone();
        shape[dim] = len;
        let out = self.ctx.storage("narrow out", numel(&shape))?;
        k::copy_strided(
            &self.ctx,
            &buf,
            &view,
            &out,
            &View::contiguous(&shape),
            &shape,
        )?;
        Ok(WgpuTensor::dense(out, shape))
    }

    fn cat(&self, ts: &[&WgpuTensor], dim: usize) -> Result<WgpuTensor> {
        let first = ts
            .first()
            .ok_or_else(|| err("cat", "nothing to concatenate".into()))?;
        let mut shape = first.shape.clone();
        if dim >= shape.len() {
            return Err(err("cat", format!("dim {dim} of {shape:?}")));
        }
        shape[dim] = 0;
        for t in ts {
            let same = t.shape.len() == shape.len()
                && t.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b);
            if !same {
                return Err(err(
                    "cat",
                    format!("{:?} and {:?} along dim {dim}", first.shape, t.shape),
                ));
            }
            shape[dim] += t.shape[dim];
        }
        let out = self.ctx.storage("cat out", numel(&shape))?;
        let mut to = View::contiguous(&shape);
        for t in ts {
            let (buf, from) = self.view("cat", t)?;
            k::copy_strided(&self.ctx, &buf, &from, &out, &to, &t.shape)?;
            to.offset += t.shape[dim] * to.strides[dim];
        }
        Ok(WgpuTensor::dense(out, shape))
    }

    fn add(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        self.binary(BinaryOp::Add, a, b)
    }

    fn sub(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        self.binary(BinaryOp::Sub, a, b)
    }

    fn mul(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        self.binary(BinaryOp::Mul, a, b)
    }

    fn scale(&self, a: &WgpuTensor, s: f32) -> Result<WgpuTensor> {
        let y = k::unary(
            &self.ctx,
            UnaryOp::Scale(s),
            &self.buf("scale", a)?,
            numel(&a.shape),
        )?;
        Ok(WgpuTensor::dense(y, a.shape.clone()))
    }

    fn matmul(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        let (sa, sb) = (&a.shape, &b.shape);
        let bad = || err("matmul", format!("{sa:?} x {sb:?}"));
        if sa.len() < 2 || sb.len() < 2 {
            return Err(bad());
        }
        let (m, kk) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (kb, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        let (lead_a, lead_b) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
        let b_batched = !lead_b.is_empty();
        if kk != kb || (b_batched && lead_a != lead_b) {
            return Err(bad());
        }
        let y = k::matmul(
            &self.ctx,
            &self.buf("matmul", a)?,
            &self.buf("matmul", b)?,
            MatmulShape {
                batch: numel(lead_a),
                m,
                n,
                k: kk,
                b_trans: false,
                b_batched,
                b_f16: false,
            },
        )?;
        let mut shape = lead_a.to_vec();
        shape.extend([m, n]);
        Ok(WgpuTensor::dense(y, shape))
    }

    fn linear(
        &self,
        x: &WgpuTensor,
        w: &WgpuTensor,
        bias: Option<&WgpuTensor>,
    ) -> Result<WgpuTensor> {
        let (m, kk) = rows_last("linear", &x.shape)?;
        let (n, wk) = match w.shape.as_slice() {
            [n, wk] => (*n, *wk),
            s => {
                return Err(err(
                    "linear",
                    format!("weight must be [out, in], got {s:?}"),
                ))
            }
        };
        if kk != wk {
            return Err(err(
                "linear",
                format!("input has {kk} features, weight expects {wk}"),
            ));
        }
        let xb = self.buf("linear", x)?;
        let y = match &w.data {
            Data::One(wb) => self.linear_one(&xb, (wb, w.half), m, n, kk)?,
            Data::Rows(parts) => {
                // Each part yields a band of output columns, written into place.
                let y = self.ctx.storage("linear out", m * n)?;
                for (start, rows, wb) in parts {
                    let part = self.linear_one(&xb, (wb, w.half), m, *rows, kk)?;
                    let to = View {
                        offset: *start,
                        strides: vec![n, 1],
                    };
                    k::copy_strided(
                        &self.ctx,
                        &part,
                        &View::contiguous(&[m, *rows]),
                        &y,
                        &to,
                        &[m, *rows],
                    )?;
                }
                y
            }
        };
        let mut shape = x.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = n;
        }
        self.add_bias(WgpuTensor::dense(y, shape), bias)
    }

    fn upload_packed(&self, w: &PackedTensor) -> Result<k::GpuPacked> {
        k::GpuPacked::upload(&self.ctx, w)
    }

    fn linear_packed(
        &self,
        x: &WgpuTensor,
        w: &k::GpuPacked,
        bias: Option<&WgpuTensor>,
    ) -> Result<WgpuTensor> {
        let (m, kk) = rows_last("linear_packed", &x.shape)?;
        if kk != w.cols {
            return Err(err(
                "linear_packed",
                format!("input has {kk} features, packed weight expects {}", w.cols),
            ));
        }
        let xb = self.buf("linear_packed", x)?;
        let y = if m <= GEMV_MAX_ROWS {
            k::gemv_dequant(&self.ctx, &xb, m, w)?
        } else {
            k::gemm_dequant(&self.ctx, &xb, m, w)?
        };
        let mut shape = x.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = w.rows;
        }
        self.add_bias(WgpuTensor::dense(y, shape), bias)
    }

    fn rms_norm(&self, x: &WgpuTensor, w: &WgpuTensor, eps: f32) -> Result<WgpuTensor> {
        let (rows, d) = rows_last("rms_norm", &x.shape)?;
        let y = k::rms_norm(
            &self.ctx,
            &self.buf("rms_norm", x)?,
            &self.buf("rms_norm", w)?,
            rows,
            d,
            eps,
        )?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn layer_norm(
        &self,
        x: &WgpuTensor,
        w: &WgpuTensor,
        b: &WgpuTensor,
        eps: f32,
    ) -> Result<WgpuTensor> {
        let (rows, d) = rows_last("layer_norm", &x.shape)?;
        let y = k::layer_norm(
            &self.ctx,
            &self.buf("layer_norm", x)?,
            &self.buf("layer_norm", w)?,
            &self.buf("layer_norm", b)?,
            rows,
            d,
            eps,
        )?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn softmax_last(&self, x: &WgpuTensor) -> Result<WgpuTensor> {
        let (rows, d) = rows_last("softmax_last", &x.shape)?;
        let y = k::softmax_last(&self.ctx, &self.buf("softmax_last", x)?, rows, d)?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn gelu_tanh(&self, x: &WgpuTensor) -> Result<WgpuTensor> {
        let y = k::gelu_tanh(&self.ctx, &self.buf("gelu_tanh", x)?, numel(&x.shape))?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn gelu_erf(&self, x: &WgpuTensor) -> Result<WgpuTensor> {
        let y = k::gelu_erf(&self.ctx, &self.buf("gelu_erf", x)?, numel(&x.shape))?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn silu(&self, x: &WgpuTensor) -> Result<WgpuTensor> {
        let y = k::unary(
            &self.ctx,
            UnaryOp::Silu,
            &self.buf("silu", x)?,
            numel(&x.shape),
        )?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn silu_mul(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        if a.shape != b.shape {
            return Err(err("silu_mul", format!("{:?} and {:?}", a.shape, b.shape)));
        }
        let y = k::silu_mul(
            &self.ctx,
            &self.buf("silu_mul", a)?,
            &self.buf("silu_mul", b)?,
            numel(&a.shape),
        )?;
        Ok(WgpuTensor::dense(y, a.shape.clone()))
    }

    fn embedding(&self, ids: &WgpuTensor, table: &WgpuTensor) -> Result<WgpuTensor> {
        let (vocab, d) = match table.shape.as_slice() {
            [v, d] => (*v, *d),
            s => {
                return Err(err(
                    "embedding",
                    format!("table must be [vocab, d], got {s:?}"),
                ))
            }
        };
        let host = ids
            .ids
            .as_ref()
            .ok_or_else(|| err("embedding", "ids must come from upload_ids".into()))?;
        if let Some(bad) = host.iter().find(|&&i| i as usize >= vocab) {
            return Err(err(
                "embedding",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let idb = self.buf("embedding", ids)?;
        let parts: Vec<(usize, usize, &GpuBuffer)> = match &table.data {
            Data::One(b) => vec![(0, vocab, b)],
            Data::Rows(p) => p.iter().map(|(s, r, b)| (*s, *r, b)).collect(),
        };
        let y = k::embedding(&self.ctx, &idb, host.len(), &parts, d)?;
        let mut shape = ids.shape.clone();
        shape.push(d);
        Ok(WgpuTensor::dense(y, shape))
    }

    fn rope(&self, x: &WgpuTensor, cos: &WgpuTensor, sin: &WgpuTensor) -> Result<WgpuTensor> {
        let (rows, d) = rows_last("rope", &x.shape)?;
        let s = match x.shape.as_slice() {
            [.., s, _] => *s,
            _ => {
                return Err(err(
                    "rope",
                    format!("x must be [.., seq, d], got {:?}", x.shape),
                ))
            }
        };
        if cos.shape != [s, d / 2] || sin.shape != cos.shape {
            return Err(err(
                "rope",
                format!(
                    "cos/sin must be [{s}, {}], got {:?} and {:?}",
                    d / 2,
                    cos.shape,
                    sin.shape
                ),
            ));
        }
        let y = k::rope(
            &self.ctx,
            &self.buf("rope", x)?,
            &self.buf("rope", cos)?,
            &self.buf("rope", sin)?,
            rows,
            s,
            d,
        )?;
        Ok(WgpuTensor::dense(y, x.shape.clone()))
    }

    fn attention(
        &self,
        q: &WgpuTensor,
        k_: &WgpuTensor,
        v: &WgpuTensor,
        mask: Option<&WgpuTensor>,
        scale: f32,
    ) -> Result<WgpuTensor> {
        let (qs, ks) = (&q.shape, &k_.shape);
        let bad = || err("attention", format!("q {qs:?}, k {ks:?}, v {:?}", v.shape));
        let ([b, h, s, d], [kb, kvh, t, kd]) = (qs.as_slice(), ks.as_slice()) else {
            return Err(bad());
        };
        if b != kb || d != kd || v.shape != *ks || k_.cap != v.cap {
            return Err(bad());
        }
        // Strides of the mask over (batch row, query): a shared [s, t] mask has no batch
        // stride, a per-row [b, 1, 1, t] key mask no query stride.
        let mask_strides = match mask {
            Some(m) => {
                crate::backend::check_attention_mask(self.name(), &m.shape, qs, ks)?;
                Some(match m.shape.as_slice() {
                    [_, 1, 1, mt] => (*mt, 0),
                    [_, mt] => (0, *mt),
                    _ => (s * t, *t),
                })
            }
            None => None,
        };
        let (kbuf, _) = self.view("attention", k_)?;
        let (vbuf, _) = self.view("attention", v)?;
        let mbuf = match (mask, mask_strides) {
            (Some(m), Some((batch, row))) => Some(k::AttentionMask {
                buf: self.buf("attention", m)?,
                batch_stride: batch,
                row_stride: row,
            }),
            _ => None,
        };
        let y = k::attention(
            &self.ctx,
            &self.buf("attention", q)?,
            &kbuf,
            &vbuf,
            mbuf.as_ref(),
            AttentionShape {
                batch: *b,
                heads: *h,
                kv_heads: *kvh,
                s: *s,
                t: *t,
                d: *d,
                cap: k_.cap.unwrap_or(*t),
            },
            scale,
        )?;
        Ok(WgpuTensor::dense(y, qs.clone()))
    }

    fn cache_append(
        &self,
        past: Option<&WgpuTensor>,
        new: &WgpuTensor,
        capacity: usize,
    ) -> Result<WgpuTensor> {
        let [b, h, s, d] = new.shape.as_slice() else {
            return Err(err(
                "cache_append",
                format!("expected [b, h, s, d], got {:?}", new.shape),
            ));
        };
        let (b, h, s, d) = (*b, *h, *s, *d);
        let (nb, nview) = self.view("cache_append", new)?;
        let at = |buf: &GpuBuffer, cap: usize, pos: usize| -> Result<()> {
            let mut to = View::contiguous(&[b, h, cap, d]);
            to.offset = pos * d;
            k::copy_strided(&self.ctx, &nb, &nview, buf, &to, &new.shape)
        };
        let (buf, cap, len) = match past {
            Some(p) if p.shape[..2] == [b, h] && p.shape[3] == d => {
                let (pb, pview) = self.view("cache_append", p)?;
                let len = p.shape[2];
                let cap = p.cap.unwrap_or(len);
                if len + s <= cap {
                    (pb, cap, len)
                } else {
                    // Full: grow to twice the need and move the cached positions over.
                    let cap = (2 * (len + s)).max(capacity);
                    let grown = self.ctx.storage("kv cache", b * h * cap * d)?;
                    k::copy_strided(
                        &self.ctx,
                        &pb,
                        &pview,
                        &grown,
                        &View::contiguous(&[b, h, cap, d]),
                        &p.shape,
                    )?;
                    (grown, cap, len)
                }
            }
            Some(p) => {
                return Err(err(
                    "cache_append",
                    format!("cache {:?} and new {:?} differ", p.shape, new.shape),
                ))
            }
            None => {
                let cap = capacity.max(s);
                (self.ctx.storage("kv cache", b * h * cap * d)?, cap, 0)
            }
        };
        at(&buf, cap, len)?;
        Ok(WgpuTensor {
            data: Data::One(buf),
            shape: vec![b, h, len + s, d],
            cap: Some(cap),
            ids: None,
            half: false,
        })
    }
}
