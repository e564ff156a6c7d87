//! Pillow's `Image.resize(..., LANCZOS)` (and `BICUBIC`, Qwen2-VL's filter) for 8-bit RGB, bit
//! for bit.
//!
//! transformers' Idefics3 image processor resizes with Pillow, on uint8 images, up to three
//! times per image; the `image` crate's Lanczos3 differs by a level here and there, which is
//! 0.008 after normalisation and far above a 1e-4 logit check. This follows Pillow's
//! `libImaging/Resample.c`: coefficients in f64 (`precompute_coeffs`), fixed point with 22
//! fraction bits (`normalize_coeffs_8bpc`), a horizontal pass into a uint8 image over only the
//! rows the vertical pass reads, then the vertical pass; rounding by adding half before the
//! shift, clamping to 0..=255.
//!
//! Pass order: Pillow 13 runs the vertical pass first when the width grows and the height
//! shrinks (as Qwen2-VL's smart_resize often asks, e.g. 130x90 -> 140x84), and so do we.
//! Known gap: for a few shapes shrinking both sides (e.g. 50x130 -> 36x96) it also goes
//! vertical first, up to 2 levels away from this; the rule for those is not found yet.
//! Idefics3's usual resizes (both sides the same way, square global image) match bit for bit,
//! and `relvqa check-reference --raw` fails loudly rather than passing on a mismatch.

use image::RgbImage;

use crate::error::{Error, Result};

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters that processors here use (`PIL.Image.Resampling` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// 1: Idefics3.
    Lanczos,
    /// 3: Qwen2-VL.
    Bicubic,
}

impl PilFilter {
    /// From a `preprocessor_config.json` `resample` value.
    pub fn from_pil_id(id: u64) -> Option<Self> {
        match id {
            1 => Some(Self::Lanczos),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }
    fn support(self) -> f64 {
        match self {
            Self::Lanczos => 3.0,
            Self::Bicubic => 2.0,
        }
    }
    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Lanczos => lanczos(x),
            Self::Bicubic => bicubic(x),
        }
    }
}

/// Pillow's `bicubic_filter` (Keys, a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per output pixel: first input index, count, and fixed-point weights (`ksize` apart).
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    k: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, filter: PilFilter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero; both values are >= -0.5 + ... so clamp after.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for x in 0..n {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            k[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, k }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize `img` to `width × height` exactly as Pillow's LANCZOS does for an RGB image.
pub fn resize_lanczos_pil(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    resize_pil(img, width, height, PilFilter::Lanczos)
}

/// Resize `img` to `width × height` exactly as Pillow's `filter` does for an RGB image.
pub fn resize_pil(img: &RgbImage, width: u32, height: u32, filter: PilFilter) -> Result<RgbImage> {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    if w0 == 0 || h0 == 0 || w1 == 0 || h1 == 0 {
        return Err(Error::Image(format!(
            "cannot resize a {w0}x{h0} image to {w1}x{h1}"
        )));
    }
    if (w0, h0) == (w1, h1) {
        return Ok(img.clone());
    }
    let src = img.as_raw();
    let horiz = precompute(w0, w1, filter);
    let vert = precompute(h0, h1, filter);
    let half = 1i64 << (PRECISION_BITS - 1);

    // Pillow 13 runs the vertical pass first when the width grows and the height shrinks
    // (found by comparing its resize with the two one-axis resizes in either order, on random
    // shapes: this rule held for every such shape; the both-shrinking exceptions remain).
    if w1 > w0 && h1 < h0 {
        let mut tmp = vec![0u8; h1 * w0 * 3];
        for yy in 0..h1 {
            let (ymin, n) = vert.bounds[yy];
            let k = &vert.k[yy * vert.ksize..yy * vert.ksize + n];
            for xx in 0..w0 {
                for c in 0..3 {
                    let mut ss = half;
                    for (y, ky) in k.iter().enumerate() {
                        ss += src[((ymin + y) * w0 + xx) * 3 + c] as i64 * *ky as i64;
                    }
                    tmp[(yy * w0 + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        let mut out = vec![0u8; h1 * w1 * 3];
        for y in 0..h1 {
            let line = &tmp[y * w0 * 3..(y + 1) * w0 * 3];
            for xx in 0..w1 {
                let (xmin, n) = horiz.bounds[xx];
                let k = &horiz.k[xx * horiz.ksize..xx * horiz.ksize + n];
                for c in 0..3 {
                    let mut ss = half;
                    for (x, kx) in k.iter().enumerate() {
                        ss += line[(x + xmin) * 3 + c] as i64 * *kx as i64;
                    }
                    out[(y * w1 + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        return RgbImage::from_raw(width, height, out)
            .ok_or_else(|| Error::Image("resize produced a wrong-sized buffer".into()));
    }

    // Horizontal pass over the rows the vertical pass will read (Pillow's ybox).
    let (tmp, tw, row0, rows) = if w0 != w1 {
        let first = vert.bounds[0].0;
        let (lb, ln) = vert.bounds[h1 - 1];
        let last = lb + ln;
        let rows = last - first;
        let mut out = vec![0u8; rows * w1 * 3];
        for y in 0..rows {
            let line = &src[(y + first) * w0 * 3..(y + first + 1) * w0 * 3];
            for xx in 0..w1 {
                let (xmin, n) = horiz.bounds[xx];
                let k = &horiz.k[xx * horiz.ksize..xx * horiz.ksize + n];
                for c in 0..3 {
                    let mut ss = half;
                    for (x, kx) in k.iter().enumerate() {
                        ss += line[(x + xmin) * 3 + c] as i64 * *kx as i64;
                    }
                    out[(y * w1 + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        (out, w1, first, rows)
    } else {
        (src.to_vec(), w0, 0, h0)
    };
    if h0 == h1 {
        return RgbImage::from_raw(width, height, tmp)
            .ok_or_else(|| Error::Image("resize produced a wrong-sized buffer".into()));
    }
    let mut out = vec![0u8; h1 * tw * 3];
    for yy in 0..h1 {
        let (ymin, n) = vert.bounds[yy];
        let ymin = ymin - row0;
        let k = &vert.k[yy * vert.ksize..yy * vert.ksize + n];
        for xx in 0..tw {
            for c in 0..3 {
                let mut ss = half;
                for (y, ky) in k.iter().enumerate() {
                    let r = y + ymin;
                    if r < rows {
                        ss += tmp[(r * tw + xx) * 3 + c] as i64 * *ky as i64;
                    }
                }
                out[(yy * tw + xx) * 3 + c] = clip8(ss);
            }
        }
    }
    RgbImage::from_raw(width, height, out)
        .ok_or_else(|| Error::Image("resize produced a wrong-sized buffer".into()))
}
