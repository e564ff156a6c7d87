//! CPU backend on `candle-core`.
//!
//! Every op is composed from candle primitives that have a backward pass, so the same model
//! definition trains with candle autograd (`crate::train`) and runs inference. Compute is f32;
//! weights stored as f16 are widened on upload.

use std::future::{ready, Future};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, D};

use super::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::quant::{kernels, PackedTensor};

/// One linear layer's input and output, recorded while a [`Recorder`] is attached.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub x: Tensor,
    /// Zero variable added to the output; its gradient after `backward` is dL/d(output).
    pub grad_probe: candle_core::Var,
}

/// Shared list the backend appends to; MBQ attaches one for its calibration passes.
pub type Recorder = Arc<Mutex<Vec<Observed>>>;

#[derive(Debug, Clone)]
pub struct CpuBackend {
    device: Device,
    recorder: Option<Recorder>,
    /// Record only linears whose name starts with this (`None`: all of them).
    record_prefix: Option<&'static str>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            recorder: None,
            record_prefix: None,
        }
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that records every linear layer's input and output into `recorder`.
    pub fn recording(recorder: Recorder) -> Self {
        Self {
            device: Device::Cpu,
            recorder: Some(recorder),
            record_prefix: None,
        }
    }

    /// Like [`CpuBackend::recording`], for the linears under `prefix` only. A probe makes
    /// candle track every op after it, so probing the vision tower too kept its whole graph
    /// (1024 patches a layer at SmolVLM-256M's size) alive until `backward`: MBQ calibration
    /// of a real-size model was killed for memory.
    pub fn recording_only(recorder: Recorder, prefix: &'static str) -> Self {
        Self {
            device: Device::Cpu,
            recorder: Some(recorder),
            record_prefix: Some(prefix),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn err(op: &'static str) -> impl FnOnce(candle_core::Error) -> Error {
    move |e| Error::Backend {
        backend: "cpu",
        op,
        msg: e.to_string(),
    }
}

impl Backend for CpuBackend {
    type Tensor = Tensor;
    type Packed = Arc<PackedTensor>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, t: &HostTensor) -> Result<Tensor> {
        Tensor::from_slice(&t.data, t.shape.as_slice(), &self.device).map_err(err("upload"))
    }

    fn upload_ids(&self, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_slice(ids, shape, &self.device).map_err(err("upload_ids"))
    }

    fn shape(&self, t: &Tensor) -> Vec<usize> {
        t.dims().to_vec()
    }

    fn read_f32(&self, t: &Tensor) -> impl Future<Output = Result<HostTensor>> {
        let r = (|| {
            let shape = t.dims().to_vec();
            let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok::<_, candle_core::Error>(HostTensor { shape, data })
        })()
        .map_err(err("read_f32"));
        ready(r)
    }

    fn reshape(&self, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
        t.reshape(shape).map_err(err("reshape"))
    }

    fn permute(&self, t: &Tensor, dims: &[usize]) -> Result<Tensor> {
        t.permute(dims)
            .and_then(|t| t.contiguous())
            .map_err(err("permute"))
    }

    fn narrow(&self, t: &Tensor, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        t.narrow(dim, start, len).map_err(err("narrow"))
    }

    fn cat(&self, ts: &[&Tensor], dim: usize) -> Result<Tensor> {
        Tensor::cat(ts, dim).map_err(err("cat"))
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.broadcast_add(b).map_err(err("add"))
    }

    fn sub(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.broadcast_sub(b).map_err(err("sub"))
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.broadcast_mul(b).map_err(err("mul"))
    }

    fn scale(&self, a: &Tensor, s: f32) -> Result<Tensor> {
        a.affine(s as f64, 0.0).map_err(err("scale"))
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.contiguous()
            .and_then(|a| b.contiguous().and_then(|b| a.matmul(&b)))
            .map_err(err("matmul"))
    }

    fn linear(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let f = || {
            let dims = x.dims().to_vec();
            let k = *dims
                .last()
                .ok_or_else(|| candle_core::Error::Msg("linear on a scalar".into()))?;
            let rows: usize = dims[..dims.len() - 1].iter().product();
            let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
            let y = match bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            };
            let mut out = dims.clone();
            if let Some(l) = out.last_mut() {
                *l = w.dim(0)?;
            }
            y.reshape(out)
        };
        f().map_err(err("linear"))
    }

    fn upload_packed(&self, w: &PackedTensor) -> Result<Arc<PackedTensor>> {
        w.validate()?;
        Ok(Arc::new(w.clone()))
    }

    fn linear_packed(
        &self,
        x: &Tensor,
        w: &Arc<PackedTensor>,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = dims.last().copied().unwrap_or(0);
        if k != w.cols {
            return Err(Error::Backend {
                backend: "cpu",
                op: "linear_packed",
                msg: format!("input has {k} features, packed weight expects {}", w.cols),
            });
        }
        let m = dims[..dims.len().saturating_sub(1)]
            .iter()
            .product::<usize>();
        let xs = x
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(err("linear_packed"))?;
        let mut out = vec![0f32; m * w.rows];
        kernels::matmul_packed(&xs, m, w, &mut out)?;
        let mut shape = dims;
        if let Some(l) = shape.last_mut() {
            *l = w.rows;
        }
        let y = Tensor::from_vec(out, shape, &self.device).map_err(err("linear_packed"))?;
        match bias {
            Some(b) => y.broadcast_add(b).map_err(err("linear_packed")),
            None => Ok(y),
        }
    }

    fn observe_linear(&self, name: &str, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let Some(r) = &self.recorder else {
            return Ok(y);
        };
        if self.record_prefix.is_some_and(|p| !name.starts_with(p)) {
            return Ok(y);
        }
        // candle's backward keeps gradients only for variables, so the output passes through
        // `y + 0` with the zero a variable: its gradient is dL/dy.
        let probe = candle_core::Var::zeros(y.dims(), y.dtype(), y.device())
            .map_err(err("observe_linear"))?;
        let out = (&y + probe.as_tensor()).map_err(err("observe_linear"))?;
        if let Ok(mut list) = r.lock() {
            list.push(Observed {
                name: name.to_string(),
                x: x.clone(),
                grad_probe: probe,
            });
        }
        Ok(out)
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        let f = || {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_div(&(ms + eps as f64)?.sqrt()?)?
                .broadcast_mul(w)
        };
        f().map_err(err("rms_norm"))
    }

    fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
        let f = || {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps as f64)?.sqrt()?)?
                .broadcast_mul(w)?
                .broadcast_add(b)
        };
        f().map_err(err("layer_norm"))
    }

    fn softmax_last(&self, x: &Tensor) -> Result<Tensor> {
        let f = || {
            let max = x.max_keepdim(D::Minus1)?;
            let e = x.broadcast_sub(&max)?.exp()?;
            let s = e.sum_keepdim(D::Minus1)?;
            e.broadcast_div(&s)
        };
        f().map_err(err("softmax"))
    }

    fn gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        x.gelu().map_err(err("gelu_tanh"))
    }

    fn gelu_erf(&self, x: &Tensor) -> Result<Tensor> {
        x.gelu_erf().map_err(err("gelu_erf"))
    }

    fn silu(&self, x: &Tensor) -> Result<Tensor> {
        x.silu().map_err(err("silu"))
    }

    fn embedding(&self, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
        let f = || {
            let dims = ids.dims().to_vec();
            let flat = ids.flatten_all()?;
            let rows = table.index_select(&flat, 0)?;
            let mut out = dims;
            out.push(table.dim(1)?);
            rows.reshape(out)
        };
        f().map_err(err("embedding"))
    }
}
