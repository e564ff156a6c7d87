//! The Selector file: one `selector.safetensors` holding the weights, with the metadata (feature
//! layout, training summary, val thresholds) as JSON in the safetensors header.
//!
//! One file rather than weights + a JSON sidecar, so the thresholds can never be paired with
//! another training run's weights, and a package lists (and checksums) a single extra file.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::mlp::{Dense, Selector, SelectorMeta};
use crate::error::{Error, Result};

pub const SELECTOR_FILE: &str = "selector.safetensors";
/// Header metadata key of the JSON [`SelectorMeta`].
const META_KEY: &str = "relvqa.selector";
/// Refuse absurd files before parsing: a Selector is well under a megabyte.
pub const MAX_SELECTOR_BYTES: usize = 64 << 20;

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Model {
        path: SELECTOR_FILE.into(),
        msg: format!("{msg}; retrain it with `relvqa selector train`"),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialise to the bytes of a `selector.safetensors` file.
pub fn to_bytes(s: &Selector) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = vec![
        ("norm.mean".into(), vec![s.mean.len()], f32_bytes(&s.mean)),
        ("norm.std".into(), vec![s.std.len()], f32_bytes(&s.std)),
        ("skip.weight".into(), vec![s.skip.len()], f32_bytes(&s.skip)),
    ];
    for (i, l) in s.layers.iter().enumerate() {
        owned.push((
            format!("layers.{i}.weight"),
            vec![l.outputs, l.inputs],
            f32_bytes(&l.weight),
        ));
        owned.push((
            format!("layers.{i}.bias"),
            vec![l.outputs],
            f32_bytes(&l.bias),
        ));
    }
    let views = owned
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(bad)
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = serde_json::to_string(&s.meta).map_err(bad)?;
    let info = HashMap::from([(META_KEY.to_string(), meta)]);
    safetensors::serialize(views, Some(info)).map_err(bad)
}

fn read_f32(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(bad(format!(
            "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
            t.dtype(),
            t.shape()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Parse a `selector.safetensors` file, checking every shape against its own metadata.
pub fn from_bytes(bytes: &[u8]) -> Result<Selector> {
    if bytes.len() > MAX_SELECTOR_BYTES {
        return Err(bad(format!(
            "{} bytes is larger than any Selector ({MAX_SELECTOR_BYTES} max)",
            bytes.len()
        )));
    }
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad(format!("no `{META_KEY}` metadata: not a relvqa Selector")))?;
    let meta: SelectorMeta = serde_json::from_str(meta_json).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let d = meta.layout.input_dim();
    let mean = read_f32(&st, "norm.mean", &[d])?;
    let std = read_f32(&st, "norm.std", &[d])?;
    if let Some(i) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(bad(format!("norm.std[{i}] is not a positive number")));
    }
    let mut layers = Vec::new();
    let mut width = d;
    for (i, out) in meta.hidden.iter().copied().chain([1]).enumerate() {
        let w = read_f32(&st, &format!("layers.{i}.weight"), &[out, width])?;
        let b = read_f32(&st, &format!("layers.{i}.bias"), &[out])?;
        layers.push(Dense::new(w, b, width)?);
        width = out;
    }
    let skip = read_f32(&st, "skip.weight", &[meta.layout.prob_features.len()])?;
    Selector::new(meta, mean, std, layers, skip).map_err(bad)
}

/// The Selector shipped with the model in `dir`, if any (checksum-verified in a package).
#[cfg(not(target_arch = "wasm32"))]
pub fn load(dir: &std::path::Path) -> Result<Option<Selector>> {
    let Some(bytes) = crate::package::read_model_file(dir, SELECTOR_FILE)? else {
        return Ok(None);
    };
    from_bytes(&bytes).map(Some).map_err(|e| Error::Model {
        path: dir.join(SELECTOR_FILE).display().to_string(),
        msg: e.to_string(),
    })
}

/// Store `s` with the model in `dir` (listed in the manifest when `dir` is a package).
#[cfg(not(target_arch = "wasm32"))]
pub fn save(dir: &std::path::Path, s: &Selector) -> Result<()> {
    crate::package::write_model_file(dir, SELECTOR_FILE, &to_bytes(s)?)
}
