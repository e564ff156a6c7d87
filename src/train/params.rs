//! Fresh trainable parameters for the one model definition: each requested tensor becomes a
//! candle `Var`, initialised like transformers' `_init_weights` (normal 0.02, norms at 1).

use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::model::params::{Init, Params};

pub struct VarParams {
    backend: CpuBackend,
    rng: ChaCha8Rng,
    pub vars: Vec<(String, Var)>,
}

impl VarParams {
    pub fn new(seed: u64) -> Self {
        Self {
            backend: CpuBackend::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            vars: Vec::new(),
        }
    }
}

impl Params<CpuBackend> for VarParams {
    fn backend(&self) -> &CpuBackend {
        &self.backend
    }

    fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0f32, std).map_err(|e| Error::Train(e.to_string()))?;
                (0..n).map(|_| d.sample(&mut self.rng)).collect()
            }
        };
        let t = Tensor::from_vec(data, shape, self.backend.device())?;
        let v = Var::from_tensor(&t)?;
        let out = v.as_tensor().clone();
        self.vars.push((name.to_string(), v));
        Ok(out)
    }

    fn contains(&self, name: &str) -> bool {
        self.vars.iter().any(|(n, _)| n == name)
    }
}
