//! The tensor operations the models need, as a trait every backend implements.
//!
//! Design constraints (see ARCHITECTURE.md):
//! - Tensors are opaque handles: data may live on a GPU, so the only way back to the host is the
//!   async [`Backend::read_f32`]. The CPU backend returns a ready future; native callers block on
//!   it with `pollster`, the browser awaits it.
//! - Everything else is synchronous *enqueue*: a GPU backend may record ops and run them later.
//! - Composite ops (attention, RoPE, repeat-kv) have default bodies built from primitives, so a
//!   new backend is correct as soon as the primitives are; fast backends override them with fused
//!   kernels and are tested against these defaults.
//! - Every op returns `Result`: shape errors and device failures are values, not panics.

pub mod cpu;
pub mod parity;
pub mod wgpu;

use std::future::Future;

use crate::error::Result;
use crate::quant::PackedTensor;

/// A host-side f32 tensor: the interchange format between loaders and backends.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(crate::Error::Invalid(format!(
                "host tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }
}

pub trait Backend: Clone + std::fmt::Debug {
    type Tensor: Clone + std::fmt::Debug;
    /// A packed int-N weight as this backend keeps it (host memory on the CPU, GPU buffers on
    /// wgpu), multiplied by [`Backend::linear_packed`] without being dequantized first.
    type Packed: Clone + std::fmt::Debug;

    /// Short name for errors and reports ("cpu", "wgpu").
    fn name(&self) -> &'static str;

    fn upload(&self, t: &HostTensor) -> Result<Self::Tensor>;
    /// Token ids; backends may store them as u32 or i64 as their gather op needs.
    fn upload_ids(&self, ids: &[u32], shape: &[usize]) -> Result<Self::Tensor>;
    fn shape(&self, t: &Self::Tensor) -> Vec<usize>;

    /// Copy a tensor back to the host. Async because a GPU readback is (`mapAsync` on the web).
    fn read_f32(&self, t: &Self::Tensor) -> impl Future<Output = Result<HostTensor>>;

    // ---- layout ----
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Reorder dimensions; the result is contiguous.
    fn permute(&self, t: &Self::Tensor, dims: &[usize]) -> Result<Self::Tensor>;
    fn narrow(
        &self,
        t: &Self::Tensor,
        dim: usize,
        start: usize,
        len: usize,
    ) -> Result<Self::Tensor>;
    fn cat(&self, ts: &[&Self::Tensor], dim: usize) -> Result<Self::Tensor>;

    // ---- arithmetic (binary ops broadcast like numpy) ----
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn sub(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn scale(&self, a: &Self::Tensor, s: f32) -> Result<Self::Tensor>;
    /// Batched matmul: `[.., m, k] x [.., k, n] -> [.., m, n]`, leading dims equal.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x [.., in] · wᵀ + bias` with `w [out, in]` (PyTorch's `nn.Linear` layout).
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// A linear layer's weight whose values are exactly f16 (read from an f16 checkpoint or
    /// package): a backend may keep it in half the memory (wgpu does; dequantized in the
    /// kernels). Only [`Backend::linear`] and `read_f32` need to accept the result.
    fn upload_half_weight(&self, t: &HostTensor) -> Result<Self::Tensor> {
        self.upload(t)
    }

    /// A float tensor from the f16 values a package stores: what [`Backend::upload`] (or
    /// [`Backend::upload_half_weight`] for a linear's `weight`) gives for them widened to f32.
    /// The GPU backend converts a slice at a time, so a large embedding's f32 copy never
    /// exists whole in host (on the web: wasm) memory.
    fn upload_f16(&self, shape: &[usize], v: &[half::f16], weight: bool) -> Result<Self::Tensor> {
        let t = HostTensor::new(shape.to_vec(), v.iter().map(|x| x.to_f32()).collect())?;
        if weight {
            self.upload_half_weight(&t)
        } else {
            self.upload(&t)
        }
    }

    fn upload_packed(&self, w: &PackedTensor) -> Result<Self::Packed>;
    /// `x [.., in] · Wᵀ + bias` for a packed `W [out, in]`: the fused dequantize-and-multiply.
    fn linear_packed(
        &self,
        x: &Self::Tensor,
        w: &Self::Packed,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// Called by every [`crate::model::linear::Linear`] with its input and output, and returns
    /// the output to use. The identity except where a backend records activations for
    /// data-aware quantization (MBQ), which adds a zero variable to catch the output's gradient.
    fn observe_linear(
        &self,
        _name: &str,
        _x: &Self::Tensor,
        y: Self::Tensor,
    ) -> Result<Self::Tensor> {
        Ok(y)
    }

    // ---- normalisation and activations (over the last dim) ----
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;
    fn softmax_last(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// GELU with the tanh approximation (`gelu_pytorch_tanh` in HF configs).
    fn gelu_tanh(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// GELU with the exact erf (`nn.GELU()`, `gelu` in HF configs): Qwen2-VL's patch merger.
    /// Not composable from the other ops (no erf), so every backend implements it.
    fn gelu_erf(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// SwiGLU's gate, `silu(a) * b` (one fused kernel on the GPU).
    fn silu_mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor> {
        self.mul(&self.silu(a)?, b)
    }

    /// Rows of `table [vocab, d]` for `ids [..]` -> `[.., d]`.
    fn embedding(&self, ids: &Self::Tensor, table: &Self::Tensor) -> Result<Self::Tensor>;

    // ---- composites with default bodies ----

    /// Rotary embedding, "rotate half" convention (Llama): `x [b, h, s, d]`, `cos`/`sin [s, d/2]`.
    fn rope(
        &self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        let shape = self.shape(x);
        let d = shape.last().copied().unwrap_or(0);
        let half = d / 2;
        let last = shape.len().saturating_sub(1);
        let x1 = self.narrow(x, last, 0, half)?;
        let x2 = self.narrow(x, last, half, half)?;
        let r1 = self.sub(&self.mul(&x1, cos)?, &self.mul(&x2, sin)?)?;
        let r2 = self.add(&self.mul(&x2, cos)?, &self.mul(&x1, sin)?)?;
        self.cat(&[&r1, &r2], last)
    }

    /// Repeat each of `kv` heads `n` times: `[b, kv, t, d] -> [b, kv*n, t, d]` (grouped-query attention).
    fn repeat_kv(&self, x: &Self::Tensor, n: usize) -> Result<Self::Tensor> {
        if n == 1 {
            return Ok(x.clone());
        }
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(crate::Error::Backend {
                backend: self.name(),
                op: "repeat_kv",
                msg: format!("expected rank 4, got {s:?}"),
            });
        }
        let x5 = self.reshape(x, &[s[0], s[1], 1, s[2], s[3]])?;
        let reps: Vec<&Self::Tensor> = std::iter::repeat_n(&x5, n).collect();
        let r = self.cat(&reps, 2)?;
        self.reshape(&r, &[s[0], s[1] * n, s[2], s[3]])
    }

    /// Append `new [b, kv, s, d]` keys (or values) to a layer's cache along the sequence
    /// dimension. `capacity` is how many positions the cache will hold in all, so a backend can
    /// allocate once and write in place (wgpu); the default concatenates. Only the latest
    /// returned cache may be appended to: in place, an older one shares the same storage.
    fn cache_append(
        &self,
        past: Option<&Self::Tensor>,
        new: &Self::Tensor,
        capacity: usize,
    ) -> Result<Self::Tensor> {
        let _ = capacity;
        match past {
            Some(p) => self.cat(&[p, new], 2),
            None => Ok(new.clone()),
        }
    }

    /// Scaled dot-product attention. `q [b, h, s, d]`, `k`/`v [b, kv, t, d]` with `h` a
    /// multiple of `kv` (grouped-query attention: query head `i` reads key head `i / (h / kv)`);
    /// `mask` (0 or -inf) is added to the scores when given, either `[s, t]` for every batch
    /// row (the causal mask) or `[b, 1, s, t]` / `[b, 1, 1, t]` per batch row, broadcast over
    /// heads and, with a third dim of 1, over queries: transformers' 4-D mask layout, which the
    /// Idefics3 vision tower uses to hide each image's padded patches as keys.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        mask: Option<&Self::Tensor>,
        scale: f32,
    ) -> Result<Self::Tensor> {
        let (h, kv) = (
            self.shape(q).get(1).copied().unwrap_or(1),
            self.shape(k).get(1).copied().unwrap_or(1),
        );
        if kv == 0 || h % kv != 0 {
            return Err(crate::Error::Backend {
                backend: self.name(),
                op: "attention",
                msg: format!("{h} query heads do not share {kv} key/value heads evenly"),
            });
        }
        let k = self.repeat_kv(k, h / kv)?;
        let v = self.repeat_kv(v, h / kv)?;
        if let Some(m) = mask {
            check_attention_mask(self.name(), &self.shape(m), &self.shape(q), &self.shape(&k))?;
        }
        let kt = self.permute(&k, &[0, 1, 3, 2])?;
        let mut scores = self.scale(&self.matmul(q, &kt)?, scale)?;
        if let Some(m) = mask {
            scores = self.add(&scores, m)?;
        }
        let p = self.softmax_last(&scores)?;
        self.matmul(&p, &v)
    }
}

/// The mask layouts [`Backend::attention`] accepts, for `q [b, h, s, d]` and `k [b, kv, t, d]`:
/// `[s, t]`, `[b, 1, s, t]` or `[b, 1, 1, t]`. Checked by every backend, so a mask that numpy
/// rules would broadcast some other way is an error on each, not a different answer.
pub fn check_attention_mask(
    backend: &'static str,
    mask: &[usize],
    q: &[usize],
    k: &[usize],
) -> Result<()> {
    let (b, s, t) = (
        q.first().copied().unwrap_or(0),
        q.get(2).copied().unwrap_or(0),
        k.get(2).copied().unwrap_or(0),
    );
    let ok = match mask {
        [ms, mt] => *ms == s && *mt == t,
        [mb, 1, ms, mt] => *mb == b && (*ms == s || *ms == 1) && *mt == t,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(crate::Error::Backend {
        backend,
        op: "attention",
        msg: format!(
            "mask must be [{s}, {t}], [{b}, 1, {s}, {t}] or [{b}, 1, 1, {t}], got {mask:?}"
        ),
    })
}

/// Causal mask for `s` new positions after `past` cached ones: `[s, past + s]`, 0 where a query
/// may look, -inf where it may not.
pub fn causal_mask(s: usize, past: usize) -> HostTensor {
    let t = past + s;
    let mut data = vec![0f32; s * t];
    for i in 0..s {
        for j in (past + i + 1)..t {
            data[i * t + j] = f32::NEG_INFINITY;
        }
    }
    HostTensor {
        shape: vec![s, t],
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::check_attention_mask;

    #[test]
    fn attention_masks_are_shared_or_per_batch_row_only() {
        let (q, k) = ([2, 4, 5, 8], [2, 2, 9, 8]);
        for ok in [&[5, 9][..], &[2, 1, 5, 9], &[2, 1, 1, 9]] {
            assert!(check_attention_mask("cpu", ok, &q, &k).is_ok(), "{ok:?}");
        }
        // Per head, rank 3, or one row for a batch of two: numpy would broadcast the last.
        for bad in [&[2, 4, 5, 9][..], &[2, 5, 9], &[1, 1, 1, 9], &[5, 8]] {
            let e = check_attention_mask("cpu", bad, &q, &k).unwrap_err();
            assert!(e.to_string().contains("[2, 1, 1, 9]"), "{e}");
        }
    }
}
