//! HQQ at load time for any architecture: a [`Params`] source that quantizes the weights a
//! predicate selects as the model's own `load` asks for them, and passes everything else
//! through. The model definition decides what is a linear weight (it calls
//! [`Params::weight`]); the caller decides which of those to quantize (the language model's,
//! as the study does). This is how Qwen2-VL gets its quantized language model without a
//! second, Qwen-specific quantization pipeline.

use crate::backend::Backend;
use crate::error::Result;
use crate::model::linear::Weight;
use crate::model::params::{Init, Params, SafetensorsParams};

use super::hqq::{self, HqqOptions};
use super::spec::QuantSpec;

pub struct HqqParams<'a, B: Backend> {
    inner: SafetensorsParams<'a, B>,
    select: Box<dyn Fn(&str) -> bool + 'a>,
    spec: QuantSpec,
    opts: HqqOptions,
    /// Names quantized so far, in load order.
    pub quantized: Vec<String>,
}

impl<'a, B: Backend> HqqParams<'a, B> {
    pub fn new(
        inner: SafetensorsParams<'a, B>,
        spec: QuantSpec,
        opts: HqqOptions,
        select: impl Fn(&str) -> bool + 'a,
    ) -> Result<Self> {
        spec.validate()?;
        Ok(Self {
            inner,
            select: Box::new(select),
            spec,
            opts,
            quantized: Vec::new(),
        })
    }
}

impl<B: Backend> Params<B> for HqqParams<'_, B> {
    fn backend(&self) -> &B {
        self.inner.backend()
    }

    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<B::Tensor> {
        self.inner.tensor(name, shape, init)
    }

    fn weight(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Weight<B>> {
        let (rows, cols) = match shape {
            [r, c] if (self.select)(name) => (*r, *c),
            _ => return self.inner.weight(name, shape, init),
        };
        self.spec.check_k(name, cols)?;
        let host = self.inner.host(name, shape)?;
        let packed = hqq::quantize(name, &host.data, rows, cols, self.spec, &self.opts)?;
        self.quantized.push(name.to_string());
        Ok(Weight::Packed(self.inner.backend().upload_packed(&packed)?))
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
}
