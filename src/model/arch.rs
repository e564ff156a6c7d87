//! Which model family a `config.json` describes, read from its `model_type` before anything
//! else is parsed, so a checkpoint of a third family is one clear error rather than a field
//! missing from the wrong config struct.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `idefics3`: SmolVLM, Idefics3 ([`crate::model::idefics3`]).
    Idefics3,
    /// `qwen2_vl`: Qwen2-VL ([`crate::model::qwen2vl`]).
    Qwen2Vl,
}

impl Architecture {
    pub fn from_config_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
        match v.get("model_type").and_then(|m| m.as_str()) {
            Some("idefics3") => Ok(Self::Idefics3),
            Some("qwen2_vl") => Ok(Self::Qwen2Vl),
            Some(other) => Err(Error::Config(format!(
                "unknown model_type `{other}`; relvqa runs `idefics3` (SmolVLM, Idefics3) and `qwen2_vl` (Qwen2-VL) checkpoints"
            ))),
            None => Err(Error::Config(
                "config.json has no `model_type`; relvqa runs `idefics3` and `qwen2_vl` checkpoints"
                    .into(),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Idefics3 => "idefics3",
            Self::Qwen2Vl => "qwen2_vl",
        }
    }
}
