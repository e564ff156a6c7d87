//! What a quantized tensor is: bit width, group size and the method that produced it.
//!
//! Groups run along the input dimension K of a `[out, in]` weight, the dimension a GEMV reduces
//! over, so one group's scale and zero are loaded once per output row and reused for its values.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const SUPPORTED_BITS: [u32; 4] = [8, 4, 3, 2];
pub const SUPPORTED_GROUPS: [usize; 3] = [32, 64, 128];
pub const DEFAULT_GROUP: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Rtn,
    Hqq,
    Mbq,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Hqq => "hqq",
            Method::Mbq => "mbq",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rtn" => Ok(Method::Rtn),
            "hqq" => Ok(Method::Hqq),
            "mbq" => Ok(Method::Mbq),
            other => Err(Error::Invalid(format!(
                "unknown quantization method {other:?}; expected rtn, hqq or mbq"
            ))),
        }
    }
}

/// Bits and group size of a packed tensor, validated on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuantSpec {
    pub bits: u32,
    pub group: usize,
}

impl QuantSpec {
    pub fn new(bits: u32, group: usize) -> Result<Self> {
        let s = Self { bits, group };
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<()> {
        if !SUPPORTED_BITS.contains(&self.bits) {
            return Err(Error::Invalid(format!(
                "{} bits is not supported; use one of {SUPPORTED_BITS:?}",
                self.bits
            )));
        }
        if !SUPPORTED_GROUPS.contains(&self.group) {
            return Err(Error::Invalid(format!(
                "group size {} is not supported; use one of {SUPPORTED_GROUPS:?}",
                self.group
            )));
        }
        Ok(())
    }

    /// Largest quantized level, `2^bits - 1`.
    pub fn max_level(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// u32 words holding one row of `k` values. Groups are multiples of 32 values, and 32 values
    /// of any width fill exactly `bits` words, so no bit is wasted, 3-bit included.
    pub fn words_per_row(&self, k: usize) -> usize {
        k / 32 * self.bits as usize
    }

    /// Refuse a K the group does not divide rather than pad: padding would change the tensor's
    /// shape on disk and every kernel would have to know about it.
    pub fn check_k(&self, name: &str, k: usize) -> Result<()> {
        if k == 0 || !k.is_multiple_of(self.group) {
            return Err(Error::Invalid(format!(
                "{name}: input dimension {k} is not a multiple of group size {}; \
                 choose a group that divides it (relvqa refuses rather than pads)",
                self.group
            )));
        }
        Ok(())
    }
}
