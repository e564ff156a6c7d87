//! `Idefics3ImageProcessor` (transformers, `image_processing_pil_idefics3.py`): resize so the
//! longest edge is `longest_edge` (the other side rounded up to even), then either square the
//! image to the tile side, or resize both sides up to multiples of the tile side, cut it into
//! `rows × cols` tiles and append the whole image squared to the tile side as the global image.
//! Rescale by 1/255 and normalise with mean = std = 0.5. Resizes are Pillow's LANCZOS on 8-bit
//! images ([`crate::model::resample`]), so pixels match transformers bit for bit.
//!
//! No padding, as in transformers: every output image is exactly `tile x tile` (squared, or a
//! tile of a multiple-of-`tile` resize), so `do_pad` has nothing to pad within one prompt and
//! the `pixel_attention_mask` is all ones; transformers pads only across a batch, with
//! all-zero images. The model handles padded images anyway (`super::patches`), for inputs
//! built another way.

use image::RgbImage;

use crate::backend::HostTensor;
use crate::error::{Error, Result};
use crate::model::resample::resize_lanczos_pil;

/// transformers' `MAX_IMAGE_SIZE`: no side is resized beyond this.
const MAX_SIDE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessorOptions {
    /// `size.longest_edge`: the first resize's target for the longest side.
    pub longest_edge: usize,
    /// `max_image_size.longest_edge`: the tile side, the vision tower's `image_size`.
    pub tile: usize,
    pub split: bool,
}

/// Tiles (row by row) then the global image, `[n, 3, tile, tile]`; `(0, 0)` when not split.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    pub pixels: HostTensor,
    pub rows: usize,
    pub cols: usize,
}

/// `_resize_output_size_rescale_to_max_len` then `_resize_output_size_scale_below_upper_bound`:
/// (height, width).
fn longest_edge_size(h: usize, w: usize, max_len: usize) -> (usize, usize) {
    let aspect = w as f64 / h as f64;
    let (mut h, mut w) = (h, w);
    if w >= h {
        w = max_len;
        h = (w as f64 / aspect) as usize;
        if h % 2 != 0 {
            h += 1;
        }
    } else {
        h = max_len;
        w = (h as f64 * aspect) as usize;
        if w % 2 != 0 {
            w += 1;
        }
    }
    let (h, w) = (h.max(1), w.max(1));
    let aspect = w as f64 / h as f64;
    let (h, w) = if w >= h && w > MAX_SIDE {
        ((MAX_SIDE as f64 / aspect) as usize, MAX_SIDE)
    } else if h > w && h > MAX_SIDE {
        (MAX_SIDE, (MAX_SIDE as f64 * aspect) as usize)
    } else {
        (h, w)
    };
    (h.max(1), w.max(1))
}

/// `resize_for_vision_encoder`: the longer side up to a multiple of `tile`, the other side
/// from it by the aspect ratio, then up to a multiple too (height, width).
fn vision_encoder_size(h: usize, w: usize, tile: usize) -> (usize, usize) {
    let up = |x: usize| x.div_ceil(tile) * tile;
    let aspect = w as f64 / h as f64;
    if w >= h {
        let w = up(w);
        (up((w as f64 / aspect) as usize), w)
    } else {
        let h = up(h);
        (h, up((h as f64 * aspect) as usize))
    }
}

fn resize(img: &RgbImage, h: usize, w: usize) -> Result<RgbImage> {
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| Error::Image(format!("width {w} is too large")))?,
        u32::try_from(h).map_err(|_| Error::Image(format!("height {h} is too large")))?,
    );
    resize_lanczos_pil(img, w32, h32)
}

/// Append `img`'s `tile × tile` window at (x0, y0), rescaled and normalised, channel-first.
fn push_normalised(out: &mut Vec<f32>, img: &RgbImage, x0: u32, y0: u32, tile: u32) {
    for c in 0..3 {
        for y in y0..y0 + tile {
            for x in x0..x0 + tile {
                let v = img.get_pixel(x, y).0[c] as f32 * (1.0 / 255.0);
                out.push((v - 0.5) / 0.5);
            }
        }
    }
}

/// Run the processor on one decoded image.
pub fn preprocess(img: &RgbImage, o: &ProcessorOptions) -> Result<ProcessedImage> {
    crate::model::image::check_dimensions(img.width(), img.height())?;
    if o.tile == 0 || o.longest_edge == 0 || o.longest_edge > MAX_SIDE || o.tile > MAX_SIDE {
        return Err(Error::Invalid(format!(
            "image processor sizes longest_edge {} and tile {} must be in 1..={MAX_SIDE}",
            o.longest_edge, o.tile
        )));
    }
    let (h, w) = longest_edge_size(img.height() as usize, img.width() as usize, o.longest_edge);
    let img = resize(img, h, w)?;
    let t = o.tile as u32;
    let mut data = Vec::new();
    let (mut rows, mut cols) = (0, 0);
    if o.split {
        let (h, w) = vision_encoder_size(h, w, o.tile);
        let img = resize(&img, h, w)?;
        if h > o.tile || w > o.tile {
            rows = (h - o.tile) / o.tile + 1;
            cols = (w - o.tile) / o.tile + 1;
            for r in 0..rows as u32 {
                for c in 0..cols as u32 {
                    push_normalised(&mut data, &img, c * t, r * t, t);
                }
            }
            let global = resize(&img, o.tile, o.tile)?;
            push_normalised(&mut data, &global, 0, 0, t);
        } else {
            push_normalised(&mut data, &img, 0, 0, t);
        }
    } else {
        let img = resize(&img, o.tile, o.tile)?;
        push_normalised(&mut data, &img, 0, 0, t);
    }
    let n = data.len() / (3 * o.tile * o.tile);
    Ok(ProcessedImage {
        pixels: HostTensor::new(vec![n, 3, o.tile, o.tile], data)?,
        rows,
        cols,
    })
}

impl ProcessorOptions {
    /// Read a checkpoint's `preprocessor_config.json` (Idefics3ImageProcessor's fields). Values
    /// this processor does not implement (another resample filter, other mean/std) are refused
    /// rather than silently run differently.
    pub fn from_preprocessor_json(text: &str) -> Result<Self> {
        let bad = |m: String| Error::Config(format!("preprocessor_config.json: {m}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let edge = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(|s| s.get("longest_edge"))
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{key}.longest_edge` is missing")))
        };
        let flag =
            |key: &str, default: bool| v.get(key).and_then(|x| x.as_bool()).unwrap_or(default);
        // Pillow's LANCZOS is 1; it is the processor's default.
        let resample = v.get("resample").and_then(|x| x.as_u64()).unwrap_or(1);
        if resample != 1 {
            return Err(bad(format!(
                "resample {resample} is not supported (LANCZOS = 1)"
            )));
        }
        for key in ["image_mean", "image_std"] {
            if let Some(a) = v.get(key).and_then(|x| x.as_array()) {
                if a.iter().any(|x| x.as_f64() != Some(0.5)) {
                    return Err(bad(format!("{key} {a:?} is not supported (0.5)")));
                }
            }
        }
        if !flag("do_resize", true) || !flag("do_rescale", true) || !flag("do_normalize", true) {
            return Err(bad(
                "do_resize, do_rescale and do_normalize must be true".into()
            ));
        }
        Ok(Self {
            longest_edge: edge("size")?,
            tile: edge("max_image_size")?,
            split: flag("do_image_splitting", true),
        })
    }
}
