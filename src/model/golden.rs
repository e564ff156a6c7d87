//! Golden reference checks: our model against Hugging Face transformers on the same weights.
//!
//! `tools/golden/` runs transformers on a tiny random checkpoint and writes the inputs and its
//! outputs to `golden.safetensors`; [`check_reference`] runs our model on those inputs and
//! compares. The file is untrusted input: every tensor's presence, dtype and shape is checked
//! against the model before anything runs, and a bad file is an [`Error::Golden`], not a panic.
//!
//! Tensors (batch 1, as transformers' processor writes them for one prompt):
//! - `input_ids` `[1, S]` (i64): the prompt, image tokens included;
//! - `pixel_values` `[1, N, 3, H, W]` (f32): N images (tiles and global image), normalised;
//! - `pixel_attention_mask` `[1, N, H, W]` (bool): the real pixels of each image; a padded
//!   image gets transformers' patch mask and position ids (`idefics3::patches`), and an image
//!   that is all zeros is batch padding and dropped, as `get_image_features` does;
//! - `logits` `[1, S, V]` (f32): the prompt forward pass, every position;
//! - `generated` `[1, G]` (i64): greedy ids after the prompt (G steps, no stop at the end token).

use safetensors::{Dtype, SafeTensors};

use crate::backend::{Backend, HostTensor};
use crate::error::{Error, Result};
use crate::model::generate::{pick_greedy, Vqa};
use crate::model::idefics3::patches::PatchMask;

/// The tolerance the issue asks for: f32 on both sides, so only summation order differs.
pub const DEFAULT_TOLERANCE: f32 = 1e-4;
/// Caps before allocating from a header (a golden file is small; these are generous).
const MAX_IMAGES: usize = 64;
const MAX_GENERATED: usize = 1024;

/// The decoded, shape-checked contents of a golden file.
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    pub input_ids: Vec<u32>,
    /// `[N, 3, H, W]` (the batch dimension dropped, all-zero padding images too).
    pub pixel_values: HostTensor,
    /// Which patches of each kept image are real, when any is padded (`None`: all real).
    pub patch_mask: Option<PatchMask>,
    /// How many all-zero images were dropped as batch padding.
    pub dropped_images: usize,
    /// `[1, S, V]`.
    pub logits: HostTensor,
    pub generated: Vec<u32>,
    /// The file's metadata (seed, transformers version), for the report.
    pub metadata: Vec<(String, String)>,
}

impl Golden {
    /// A metadata value (`prompt`, `image`, `do_image_splitting`, `seed`, …).
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The question inside the golden's `prompt` (SmolVLM's chat format for one image:
    /// `<|im_start|>User:<image>{question}<end_of_utterance>\nAssistant:`).
    pub fn question(&self) -> Result<&str> {
        let p = self.meta("prompt").ok_or_else(|| Error::Golden {
            file: "golden".into(),
            msg: "has no `prompt` in its metadata, so there are no raw inputs to rebuild".into(),
        })?;
        p.strip_prefix("<|im_start|>User:<image>")
            .and_then(|r| r.strip_suffix("<end_of_utterance>\nAssistant:"))
            .ok_or_else(|| Error::Golden {
                file: "golden".into(),
                msg: format!("prompt {p:?} is not SmolVLM's one-image chat format"),
            })
    }
}

/// What [`check_reference`] measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReferenceReport {
    pub logits_shape: Vec<usize>,
    /// Largest |ours - reference| over every prompt position and vocabulary entry (infinite
    /// when either side has a non-finite value).
    pub max_abs_diff: f32,
    /// Where it occurs: (prompt position, token id).
    pub max_at: (usize, usize),
    pub tolerance: f32,
    pub generated_ours: Vec<u32>,
    pub generated_reference: Vec<u32>,
}

impl ReferenceReport {
    pub fn logits_ok(&self) -> bool {
        self.max_abs_diff <= self.tolerance
    }
    pub fn ids_equal(&self) -> bool {
        self.generated_ours == self.generated_reference
    }
    pub fn passed(&self) -> bool {
        self.logits_ok() && self.ids_equal()
    }
}

fn dims(view: &safetensors::tensor::TensorView<'_>) -> Vec<usize> {
    view.shape().to_vec()
}

impl Golden {
    /// Parse a golden file and check it against the model configuration it will run on.
    /// `file` names the file in messages.
    pub fn from_bytes(
        file: &str,
        bytes: &[u8],
        cfg: &crate::model::idefics3::Idefics3Config,
    ) -> Result<Self> {
        let err = |msg: String| Error::Golden {
            file: file.into(),
            msg,
        };
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let metadata = header
            .metadata()
            .as_ref()
            .map(|m| {
                let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let get = |name: &str| {
            st.tensor(name).map_err(|_| {
                err(format!(
                    "has no tensor `{name}`; regenerate it with tools/golden/make_idefics3.py"
                ))
            })
        };
        let t = &cfg.text_config;
        let v = &cfg.vision_config;

        let ids_view = get("input_ids")?;
        let s = match dims(&ids_view).as_slice() {
            [1, s] if *s > 0 => *s,
            other => {
                return Err(err(format!(
                    "`input_ids` has shape {other:?}; expected [1, sequence] (one prompt)"
                )))
            }
        };
        let input_ids = ids_from_view("input_ids", &ids_view, t.vocab_size).map_err(err)?;
        if s >= t.max_position_embeddings {
            return Err(err(format!(
                "the prompt is {s} tokens; the model's context is {}",
                t.max_position_embeddings
            )));
        }

        let px_view = get("pixel_values")?;
        let side = v.image_size;
        let n = match dims(&px_view).as_slice() {
            [1, n, c, h, w] if *c == v.num_channels && *h == side && *w == side => *n,
            other => {
                return Err(err(format!(
                    "`pixel_values` has shape {other:?}; expected [1, images, {}, {side}, {side}] for this model (vision image_size {side})",
                    v.num_channels
                )))
            }
        };
        if n == 0 || n > MAX_IMAGES {
            return Err(err(format!(
                "`pixel_values` holds {n} images; expected 1..={MAX_IMAGES}"
            )));
        }
        let px = float_from_view("pixel_values", &px_view).map_err(err)?;

        let mask_view = get("pixel_attention_mask")?;
        if dims(&mask_view) != [1, n, side, side] {
            return Err(err(format!(
                "`pixel_attention_mask` has shape {:?}; expected [1, {n}, {side}, {side}] to match `pixel_values`",
                mask_view.shape()
            )));
        }
        if !matches!(mask_view.dtype(), Dtype::BOOL | Dtype::U8) {
            return Err(err(format!(
                "`pixel_attention_mask` has dtype {:?}; expected BOOL",
                mask_view.dtype()
            )));
        }
        let pixel_mask: Vec<bool> = mask_view.data().iter().map(|x| *x != 0).collect();
        let (pixel_values, pixel_mask, dropped_images) =
            drop_padding_images(px, pixel_mask, n, v.num_channels, side);
        let patch_mask = if pixel_mask.iter().all(|x| *x) {
            None
        } else {
            let kept = pixel_values.shape[0];
            let m =
                PatchMask::from_pixel_mask(&pixel_mask, kept, side / v.patch_size, v.patch_size)
                    .map_err(|e| err(format!("`pixel_attention_mask`: {e}")))?;
            Some(m)
        };

        let logits_view = get("logits")?;
        if dims(&logits_view) != [1, s, t.vocab_size] {
            return Err(err(format!(
                "`logits` has shape {:?}; expected [1, {s}, {}] (prompt length, vocab_size)",
                logits_view.shape(),
                t.vocab_size
            )));
        }
        let logits = HostTensor::new(
            vec![1, s, t.vocab_size],
            float_from_view("logits", &logits_view).map_err(err)?,
        )?;

        let gen_view = get("generated")?;
        match dims(&gen_view).as_slice() {
            [1, g] if *g > 0 && *g <= MAX_GENERATED => {}
            other => {
                return Err(err(format!(
                    "`generated` has shape {other:?}; expected [1, steps] with 1..={MAX_GENERATED} steps"
                )))
            }
        }
        let generated = ids_from_view("generated", &gen_view, t.vocab_size).map_err(err)?;
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
            patch_mask,
            dropped_images,
            logits,
            generated,
            metadata,
        })
    }
}

/// transformers' `real_images_inds`: an image whose every value is 0.0 is padding added to make
/// a batch's image counts equal, and is dropped with its mask before the vision tower (its
/// prompt has no tokens for it). Returns the kept pixels `[kept, c, side, side]`, their masks
/// and how many were dropped. `px` holds `n` images of `c * side * side` values.
fn drop_padding_images(
    px: Vec<f32>,
    mask: Vec<bool>,
    n: usize,
    c: usize,
    side: usize,
) -> (HostTensor, Vec<bool>, usize) {
    let per_image = c * side * side;
    let per_mask = side * side;
    let real: Vec<bool> = px
        .chunks_exact(per_image)
        .map(|img| img.iter().any(|x| *x != 0.0))
        .collect();
    let kept = real.iter().filter(|r| **r).count();
    if kept == n {
        let t = HostTensor {
            shape: vec![n, c, side, side],
            data: px,
        };
        return (t, mask, 0);
    }
    let mut data = Vec::with_capacity(kept * per_image);
    let mut kept_mask = Vec::with_capacity(kept * per_mask);
    for (i, keep) in real.iter().enumerate() {
        if *keep {
            data.extend_from_slice(&px[i * per_image..(i + 1) * per_image]);
            kept_mask.extend_from_slice(&mask[i * per_mask..(i + 1) * per_mask]);
        }
    }
    let t = HostTensor {
        shape: vec![kept, c, side, side],
        data,
    };
    (t, kept_mask, n - kept)
}

pub(crate) fn ids_from_view(
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
    vocab: usize,
) -> std::result::Result<Vec<u32>, String> {
    let raw: Vec<i64> = match view.dtype() {
        Dtype::I64 => view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::I32 => view
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        other => {
            return Err(format!(
                "`{name}` has dtype {other:?}; expected I64 token ids"
            ))
        }
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, id)| match u32::try_from(id) {
            Ok(u) if (u as usize) < vocab => Ok(u),
            _ => Err(format!(
                "`{name}`[{i}] = {id} is outside the vocabulary 0..{vocab}"
            )),
        })
        .collect()
}

pub(crate) fn float_from_view(
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> std::result::Result<Vec<f32>, String> {
    match view.dtype() {
        Dtype::F32 => Ok(view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        other => Err(format!(
            "`{name}` has dtype {other:?}; expected F32 (the check is at f32 precision)"
        )),
    }
}

/// Largest |ours - reference| and where: (row, column) of a `[.., vocab]` layout. NaN counts as
/// infinite, so it fails every tolerance.
pub(crate) fn max_abs_diff(ours: &[f32], reference: &[f32], vocab: usize) -> (f32, (usize, usize)) {
    let vocab = vocab.max(1);
    let (mut max, mut at) = (0f32, (0, 0));
    for (i, (o, r)) in ours.iter().zip(reference).enumerate() {
        let d = (o - r).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > max {
            max = d;
            at = (i / vocab, i % vocab);
        }
    }
    (max, at)
}

/// Run `vqa` on the golden inputs: the prompt's logits at every position, then greedy decoding
/// for as many steps as the reference took, with the KV cache as [`Vqa::answer_prompt`] uses it.
pub async fn check_reference<B: Backend>(
    vqa: &Vqa<B>,
    golden: &Golden,
    tolerance: f32,
) -> Result<ReferenceReport> {
    let b = &vqa.backend;
    let m = &vqa.model;
    let ids = &golden.input_ids;
    let s = ids.len();
    // Every image may be batch padding (then the prompt must have no image tokens).
    let px = match golden.pixel_values.shape.first() {
        Some(0) | None => None,
        Some(_) => Some(b.upload(&golden.pixel_values)?),
    };
    let mut cache = m.new_cache(s + golden.generated.len());
    let hidden = m.forward_hidden_masked(
        b,
        ids,
        1,
        px.as_ref(),
        golden.patch_mask.as_ref(),
        Some(&mut cache),
    )?;
    compare_with_reference(
        b,
        &hidden,
        &golden.logits,
        &golden.generated,
        tolerance,
        |h| m.logits(b, h),
        |tok| m.forward_tokens(b, &[tok], 1, Some(&mut cache)),
    )
    .await
}

/// Compare a prompt's forward pass with the reference's logits, then decode greedily for as
/// many steps as the reference did. Shared by every architecture's `check_reference`, so
/// "agrees with transformers" means the same thing for each.
///
/// `hidden`: our prompt states `[1, s, d]`; `logits` maps states to vocabulary logits;
/// `forward_token` runs one decode step through the model's KV cache.
pub(crate) async fn compare_with_reference<B: Backend>(
    b: &B,
    hidden: &B::Tensor,
    reference_logits: &HostTensor,
    reference_generated: &[u32],
    tolerance: f32,
    logits: impl Fn(&B::Tensor) -> Result<B::Tensor>,
    mut forward_token: impl FnMut(u32) -> Result<B::Tensor>,
) -> Result<ReferenceReport> {
    let ours = b.read_f32(&logits(hidden)?).await?;
    if ours.shape != reference_logits.shape {
        return Err(Error::Invalid(format!(
            "our logits have shape {:?}, the reference's {:?}",
            ours.shape, reference_logits.shape
        )));
    }
    let (s, vocab) = match ours.shape[..] {
        [1, s, v] if s > 0 && v > 0 => (s, v),
        _ => {
            return Err(Error::Invalid(format!(
                "reference logits {:?} are not [1, s, vocab]",
                ours.shape
            )))
        }
    };
    let (max_abs_diff, max_at) = max_abs_diff(&ours.data, &reference_logits.data, vocab);
    let non_finite = || Error::Backend {
        backend: b.name(),
        op: "check_reference",
        msg: "non-finite logits".into(),
    };
    let last = &ours.data[(s - 1) * vocab..s * vocab];
    let mut next = pick_greedy(last).ok_or_else(non_finite)?.0;
    let mut generated = Vec::with_capacity(reference_generated.len());
    for step in 0..reference_generated.len() {
        generated.push(next);
        if step + 1 == reference_generated.len() {
            break;
        }
        let h = forward_token(next)?;
        let l = b.read_f32(&logits(&h)?).await?;
        next = pick_greedy(&l.data).ok_or_else(non_finite)?.0;
    }
    Ok(ReferenceReport {
        logits_shape: ours.shape,
        max_abs_diff,
        max_at,
        tolerance,
        generated_ours: generated,
        generated_reference: reference_generated.to_vec(),
    })
}
