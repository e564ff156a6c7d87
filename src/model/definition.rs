//! The one model definition of each architecture, seen through its config: "given a
//! [`Params`] source, build the model of this config". Everything that must know which tensors
//! a model asks for without naming them itself — the [`crate::model::weights::ParamPlan`]
//! recorded on shapes alone, the [`crate::model::weights::WeightSink`] that uploads a package
//! tensor by tensor, the quantizer that decides which linears to pack — is generic over this
//! trait, so Idefics3 and Qwen2-VL share one streaming loader instead of a copy each.
//!
//! It is implemented on the config rather than the model because the plan runs the definition
//! on the CPU backend and the sink assembles it on another: the config names the family, the
//! generic associated type names the model on any backend.

use crate::backend::Backend;
use crate::error::Result;
use crate::model::arch::Architecture;
use crate::model::idefics3::{Idefics3, Idefics3Config};
use crate::model::params::Params;
use crate::model::qwen2vl::{Qwen2Vl, Qwen2VlConfig};

pub trait ModelDefinition: Clone {
    /// The model this config describes, on backend `B`.
    type Model<B: Backend>;
    /// Which family this is (what a package's `config.json` says).
    const ARCHITECTURE: Architecture;
    /// Parse and check the Hugging Face `config.json` of this family.
    fn from_config_json(text: &str) -> Result<Self>;
    /// Build the model, asking `p` for each parameter by its Hugging Face name.
    fn load<B: Backend>(&self, p: &mut dyn Params<B>) -> Result<Self::Model<B>>;
}

impl ModelDefinition for Idefics3Config {
    type Model<B: Backend> = Idefics3<B>;
    const ARCHITECTURE: Architecture = Architecture::Idefics3;

    fn from_config_json(text: &str) -> Result<Self> {
        Self::from_json(text)
    }

    fn load<B: Backend>(&self, p: &mut dyn Params<B>) -> Result<Self::Model<B>> {
        Idefics3::load(p, self)
    }
}

impl ModelDefinition for Qwen2VlConfig {
    type Model<B: Backend> = Qwen2Vl<B>;
    const ARCHITECTURE: Architecture = Architecture::Qwen2Vl;

    fn from_config_json(text: &str) -> Result<Self> {
        Self::from_json(text)
    }

    fn load<B: Backend>(&self, p: &mut dyn Params<B>) -> Result<Self::Model<B>> {
        Qwen2Vl::load(p, self)
    }
}
