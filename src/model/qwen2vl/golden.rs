//! Qwen2-VL golden files (`tools/golden/make_qwen2vl.py`): our model against transformers on
//! the same weights and inputs. Parsed as untrusted input like the Idefics3 ones
//! ([`crate::model::golden`]), with Qwen2-VL's inputs:
//! - `input_ids` `[1, S]` (i64): the prompt, `<|image_pad|>` expanded;
//! - `pixel_values` `[P, c·t·p·p]` (f32): every image's flattened patches, in order;
//! - `image_grid_thw` `[I, 3]` (i64): each image's (t, h, w) in patches;
//! - `logits` `[1, S, V]` (f32) and `generated` `[1, G]` (i64), as for Idefics3.

use safetensors::{Dtype, SafeTensors};

use super::loader::Qwen2VlModel;
use super::GridThw;
use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::golden::{
    compare_with_reference, float_from_view, ids_from_view, ReferenceReport,
};

const MAX_IMAGES: usize = 64;
const MAX_GENERATED: usize = 1024;
/// A grid side beyond this (in patches) is not an image the processor makes (≈ 57k pixels).
const MAX_GRID_SIDE: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct QwenGolden {
    pub input_ids: Vec<u32>,
    /// `[patches, c·t·p·p]`.
    pub pixel_values: HostTensor,
    pub grids: Vec<GridThw>,
    /// `[1, S, V]`.
    pub logits: HostTensor,
    pub generated: Vec<u32>,
    pub metadata: Vec<(String, String)>,
}

impl QwenGolden {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parse a golden file and check it against the model it will run on.
    pub fn from_bytes<B: Backend>(file: &str, bytes: &[u8], m: &Qwen2VlModel<B>) -> Result<Self> {
        let err = |msg: String| Error::Golden {
            file: file.into(),
            msg,
        };
        let cfg = &m.model.cfg;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let mut metadata: Vec<(String, String)> = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        metadata.sort();
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let get = |name: &str| {
            st.tensor(name).map_err(|_| {
                err(format!(
                    "has no tensor `{name}`; regenerate it with tools/golden/make_qwen2vl.py"
                ))
            })
        };
        let t = &cfg.text;
        let vocab = t.vocab_size;

        let ids_view = get("input_ids")?;
        let s = match ids_view.shape() {
            [1, s] if *s > 0 && *s < t.max_position_embeddings => *s,
            other => {
                return Err(err(format!(
                    "`input_ids` has shape {other:?}; expected [1, sequence] with the sequence inside the context of {}",
                    t.max_position_embeddings
                )))
            }
        };
        let input_ids = ids_from_view("input_ids", &ids_view, vocab).map_err(err)?;

        let grid_view = get("image_grid_thw")?;
        let n_img = match grid_view.shape() {
            [n, 3] if *n > 0 && *n <= MAX_IMAGES => *n,
            other => {
                return Err(err(format!(
                    "`image_grid_thw` has shape {other:?}; expected [images, 3] with 1..={MAX_IMAGES} images"
                )))
            }
        };
        if grid_view.dtype() != Dtype::I64 {
            return Err(err(format!(
                "`image_grid_thw` has dtype {:?}; expected I64",
                grid_view.dtype()
            )));
        }
        let raw: Vec<i64> = grid_view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let mut grids = Vec::with_capacity(n_img);
        for (i, g) in raw.chunks_exact(3).enumerate() {
            let side = |x: i64| {
                usize::try_from(x)
                    .ok()
                    .filter(|x| *x > 0 && *x <= MAX_GRID_SIDE)
            };
            match (side(g[0]), side(g[1]), side(g[2])) {
                (Some(a), Some(b), Some(c)) => grids.push([a, b, c]),
                _ => {
                    return Err(err(format!(
                        "`image_grid_thw`[{i}] = {g:?} is not a grid of 1..={MAX_GRID_SIDE} patches a side"
                    )))
                }
            }
        }
        let patches: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();

        let dim = cfg.vision.patch_dim();
        let px_view = get("pixel_values")?;
        if px_view.shape() != [patches, dim] {
            return Err(err(format!(
                "`pixel_values` has shape {:?}; expected [{patches}, {dim}] (the grids' patches, channels · temporal · patch · patch)",
                px_view.shape()
            )));
        }
        let pixel_values = HostTensor::new(
            vec![patches, dim],
            float_from_view("pixel_values", &px_view).map_err(err)?,
        )?;

        let logits_view = get("logits")?;
        if logits_view.shape() != [1, s, vocab] {
            return Err(err(format!(
                "`logits` has shape {:?}; expected [1, {s}, {vocab}] (prompt length, vocab_size)",
                logits_view.shape()
            )));
        }
        let logits = HostTensor::new(
            vec![1, s, vocab],
            float_from_view("logits", &logits_view).map_err(err)?,
        )?;

        let gen_view = get("generated")?;
        match gen_view.shape() {
            [1, g] if *g > 0 && *g <= MAX_GENERATED => {}
            other => {
                return Err(err(format!(
                    "`generated` has shape {other:?}; expected [1, steps] with 1..={MAX_GENERATED} steps"
                )))
            }
        }
        let generated = ids_from_view("generated", &gen_view, vocab).map_err(err)?;
        if s + generated.len() > t.max_position_embeddings {
            return Err(err(format!(
                "prompt ({s}) plus generated ({}) exceed the model's context of {}",
                generated.len(),
                t.max_position_embeddings
            )));
        }
        Ok(Self {
            input_ids,
            pixel_values,
            grids,
            logits,
            generated,
            metadata,
        })
    }
}

/// Run the model on the golden inputs: the prompt's logits at every position, then greedy
/// decoding with the KV cache for as many steps as the reference took.
pub async fn check_reference<B: Backend>(
    m: &Qwen2VlModel<B>,
    golden: &QwenGolden,
    tolerance: f32,
) -> Result<ReferenceReport> {
    let b = &m.backend;
    let model = &m.model;
    let ids = &golden.input_ids;
    let s = ids.len();
    let px = b.upload(&golden.pixel_values)?;
    let mut cache = model.new_cache(s + golden.generated.len());
    let hidden = model.forward_prompt(b, ids, Some(&px), &golden.grids, Some(&mut cache))?;
    compare_with_reference(
        b,
        &hidden,
        &golden.logits,
        &golden.generated,
        tolerance,
        |h| model.logits(b, h),
        |tok| model.forward_tokens(b, &[tok], &mut cache),
    )
    .await
}
