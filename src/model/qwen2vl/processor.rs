//! `Qwen2VLImageProcessor` (transformers, `image_processing_pil_qwen2_vl.py`): `smart_resize`
//! both sides to multiples of `patch · merge` (28) with the pixel count inside
//! `[min_pixels, max_pixels]`, Pillow BICUBIC on the 8-bit image, rescale (f64, then f32) and
//! normalise with CLIP's mean and std, then cut into `patch × patch` patches, each repeated
//! `temporal_patch_size` times (a still image is a clip of identical frames) and flattened in
//! (channel, frame, y, x) order, patches ordered by `merge × merge` block, row-major inside.

use image::RgbImage;

use super::vision::GridThw;
use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::model::resample::{resize_pil, PilFilter};

/// transformers refuses more extreme aspect ratios in `smart_resize`.
const MAX_ASPECT: f64 = 200.0;
/// Caps on what a `preprocessor_config.json` may ask for (Qwen2-VL's default max is
/// 28·28·1280 ≈ 1.0 M pixels; this allows 16 times that).
const MAX_PIXELS_CAP: usize = 16 * 28 * 28 * 1280;

/// OpenAI CLIP's mean and std (transformers' `OPENAI_CLIP_MEAN` / `_STD`), rounded to f32 as
/// numpy does when it normalises an f32 image.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorOptions {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub filter: PilFilter,
    pub rescale_factor: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ProcessorOptions {
    /// Qwen2-VL's defaults.
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            filter: PilFilter::Bicubic,
            rescale_factor: 1.0 / 255.0,
            mean: CLIP_MEAN.map(|x| x as f32),
            std: CLIP_STD.map(|x| x as f32),
        }
    }
}

/// One image as the model takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `[patches, 3 · temporal · patch · patch]`.
    pub pixels: HostTensor,
    pub grid: GridThw,
}

/// transformers' `smart_resize`: (height, width), multiples of `factor`.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 || factor == 0 {
        return Err(Error::Image(format!(
            "cannot resize a {width}x{height} image"
        )));
    }
    let (h, w) = (height as f64, width as f64);
    let aspect = h.max(w) / h.min(w);
    if aspect > MAX_ASPECT {
        return Err(Error::Image(format!(
            "a {width}x{height} image has aspect ratio {aspect:.1}; Qwen2-VL's processor takes at most {MAX_ASPECT}. Crop or pad it first."
        )));
    }
    let f = factor as f64;
    // Python's round() rounds half to even.
    let round = |x: f64| (x / f).round_ties_even() as usize * factor;
    let (mut hb, mut wb) = (round(h), round(w));
    if hb * wb > max_pixels {
        let beta = (h * w / max_pixels as f64).sqrt();
        hb = factor.max((h / beta / f).floor() as usize * factor);
        wb = factor.max((w / beta / f).floor() as usize * factor);
    } else if hb * wb < min_pixels {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() as usize * factor;
        wb = (w * beta / f).ceil() as usize * factor;
    }
    Ok((hb, wb))
}

/// Run the processor on one decoded image.
pub fn preprocess(img: &RgbImage, o: &ProcessorOptions) -> Result<ProcessedImage> {
    crate::model::image::check_dimensions(img.width(), img.height())?;
    let (ps, m, tp) = (o.patch_size, o.merge_size, o.temporal_patch_size);
    let factor = ps * m;
    let (h, w) = smart_resize(
        img.height() as usize,
        img.width() as usize,
        factor,
        o.min_pixels,
        o.max_pixels,
    )?;
    if h * w > MAX_PIXELS_CAP || h == 0 || w == 0 {
        return Err(Error::Image(format!(
            "the image would be resized to {w}x{h}, outside 1..={MAX_PIXELS_CAP} pixels"
        )));
    }
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| Error::Image(format!("width {w} is too large")))?,
        u32::try_from(h).map_err(|_| Error::Image(format!("height {h} is too large")))?,
    );
    let img = resize_pil(img, w32, h32, o.filter)?;
    // Channel-first, rescaled in f64 then rounded to f32, normalised in f32 (numpy's order).
    let mut chw = vec![0f32; 3 * h * w];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = (px.0[c] as f64 * o.rescale_factor) as f32;
            chw[(c * h + y as usize) * w + x as usize] = (v - o.mean[c]) / o.std[c];
        }
    }
    let (gh, gw) = (h / ps, w / ps);
    let dim = 3 * tp * ps * ps;
    let mut data = Vec::with_capacity(gh * gw * dim);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for ih in 0..m {
                for iw in 0..m {
                    let (py, px) = ((bh * m + ih) * ps, (bw * m + iw) * ps);
                    for c in 0..3 {
                        for _ in 0..tp {
                            for y in 0..ps {
                                let row = (c * h + py + y) * w + px;
                                data.extend_from_slice(&chw[row..row + ps]);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ProcessedImage {
        pixels: HostTensor::new(vec![gh * gw, dim], data)?,
        grid: [1, gh, gw],
    })
}

impl ProcessorOptions {
    /// Read a checkpoint's `preprocessor_config.json` (`Qwen2VLImageProcessor`'s fields: `size`
    /// with `shortest_edge`/`longest_edge` as min/max pixels, or the older `min_pixels` /
    /// `max_pixels`). Settings this processor does not implement are refused.
    pub fn from_preprocessor_json(text: &str) -> Result<Self> {
        let bad = |m: String| Error::Config(format!("preprocessor_config.json: {m}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let d = Self::default();
        let num = |key: &str| v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize);
        let size = |key: &str| {
            v.get("size")
                .and_then(|s| s.get(key))
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
        };
        let min_pixels = size("shortest_edge")
            .or_else(|| num("min_pixels"))
            .unwrap_or(d.min_pixels);
        let max_pixels = size("longest_edge")
            .or_else(|| num("max_pixels"))
            .unwrap_or(d.max_pixels);
        if min_pixels == 0 || min_pixels > max_pixels || max_pixels > MAX_PIXELS_CAP {
            return Err(bad(format!(
                "min/max pixels {min_pixels}/{max_pixels} must satisfy 0 < min <= max <= {MAX_PIXELS_CAP}"
            )));
        }
        let resample = v.get("resample").and_then(|x| x.as_u64()).unwrap_or(3);
        let filter = PilFilter::from_pil_id(resample).ok_or_else(|| {
            bad(format!(
                "resample {resample} is not supported (BICUBIC = 3)"
            ))
        })?;
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None => Ok(default),
                Some(a) => {
                    let xs: Vec<f32> = a
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_f64())
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    match xs.as_slice() {
                        [a, b, c] => Ok([*a, *b, *c]),
                        _ => Err(bad(format!("`{key}` must be three numbers"))),
                    }
                }
            }
        };
        let flag = |key: &str| v.get(key).and_then(|x| x.as_bool()).unwrap_or(true);
        if !flag("do_resize") || !flag("do_rescale") || !flag("do_normalize") {
            return Err(bad(
                "do_resize, do_rescale and do_normalize must be true".into()
            ));
        }
        let o = Self {
            min_pixels,
            max_pixels,
            patch_size: num("patch_size").unwrap_or(d.patch_size),
            temporal_patch_size: num("temporal_patch_size").unwrap_or(d.temporal_patch_size),
            merge_size: num("merge_size").unwrap_or(d.merge_size),
            filter,
            rescale_factor: v
                .get("rescale_factor")
                .and_then(|x| x.as_f64())
                .unwrap_or(d.rescale_factor),
            mean: triple("image_mean", d.mean)?,
            std: triple("image_std", d.std)?,
        };
        if o.patch_size == 0
            || o.patch_size > 64
            || o.merge_size == 0
            || o.merge_size > 8
            || o.temporal_patch_size == 0
            || o.temporal_patch_size > 8
        {
            return Err(bad(format!(
                "patch_size {}, merge_size {}, temporal_patch_size {} are out of range",
                o.patch_size, o.merge_size, o.temporal_patch_size
            )));
        }
        if o.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(bad(format!("image_std {:?} must be positive", o.std)));
        }
        Ok(o)
    }
}
