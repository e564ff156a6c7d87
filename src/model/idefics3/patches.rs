//! Which vision patches of each image are real, and the position ids transformers gives them:
//! the "variable-size patch position ids" of `Idefics3VisionEmbeddings.forward` and the mask
//! handling of `Idefics3Model.get_image_features` (transformers 5.x, `modeling_idefics3.py`).
//!
//! - A patch is real when any of its pixels is (`pixel_attention_mask` unfolded over
//!   `patch_size`, summed, `> 0`).
//! - An image whose real patches span `nb_h` rows (real patches in column 0) and `nb_w`
//!   columns (in row 0) spreads them over the whole `side x side` position grid: row `r` gets
//!   `bucketize(min(r * f32(1/nb_h), 1 - 1e-6), boundaries, right=True)`, with `boundaries =
//!   arange(1/side, 1, 1/side)` in f32; padded patches keep position 0.
//! - Padded patches are hidden as *keys* in every encoder layer; they still run as queries, and
//!   their outputs reach the connector, as in transformers.
//!
//! A full image of most sides gets the identity (`0..side²`), but not every side: with
//! `side = 19` row 12 lands in bucket 11, because `12 * f32(1/19)` rounds below the f32
//! boundary. So the ids are always computed the transformers way, and the vision tower only
//! takes its plain "add the whole table" path when they are the identity.

use crate::backend::HostTensor;
use crate::error::{Error, Result};

/// Per image, which of its `side x side` patches are real (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchMask {
    side: usize,
    /// `[images, side * side]`.
    real: Vec<bool>,
}

impl PatchMask {
    /// Every patch of `images` images real.
    pub fn full(images: usize, side: usize) -> Self {
        Self {
            side,
            real: vec![true; images * side * side],
        }
    }

    /// From a processor's `pixel_attention_mask` `[images, h, w]` (non-zero = real pixel),
    /// with `h = w = side * patch`: a patch is real when any of its pixels is. An image with
    /// no real patch, or whose real patches leave row 0 or column 0 empty (transformers divides
    /// by zero there), is refused.
    pub fn from_pixel_mask(
        pixels: &[bool],
        images: usize,
        side: usize,
        patch: usize,
    ) -> Result<Self> {
        let w = side * patch;
        if patch == 0 || pixels.len() != images * w * w {
            return Err(Error::Invalid(format!(
                "pixel_attention_mask has {} values; {images} image(s) of {w}x{w} need {}",
                pixels.len(),
                images * w * w
            )));
        }
        let mut real = vec![false; images * side * side];
        for (i, px) in pixels.iter().enumerate() {
            if *px {
                let (img, y, x) = (i / (w * w), (i / w) % w, i % w);
                real[(img * side + y / patch) * side + x / patch] = true;
            }
        }
        let m = Self { side, real };
        for img in 0..images {
            let (nb_h, nb_w) = m.extent(img);
            if nb_h == 0 || nb_w == 0 {
                return Err(Error::Invalid(format!(
                    "pixel_attention_mask of image {img} has no real patch in its first row or column; transformers places real pixels top-left and cannot position this image"
                )));
            }
        }
        Ok(m)
    }

    pub fn images(&self) -> usize {
        self.real.len() / (self.side * self.side).max(1)
    }

    pub fn side(&self) -> usize {
        self.side
    }

    /// How many images have at least one padded patch.
    pub fn padded_images(&self) -> usize {
        (0..self.images())
            .filter(|i| self.image(*i).iter().any(|r| !r))
            .count()
    }

    pub fn is_full(&self) -> bool {
        self.real.iter().all(|r| *r)
    }

    fn image(&self, img: usize) -> &[bool] {
        let t = self.side * self.side;
        &self.real[img * t..(img + 1) * t]
    }

    /// (real patches in column 0, real patches in row 0): transformers' `nb_patches_h/w`.
    fn extent(&self, img: usize) -> (usize, usize) {
        let m = self.image(img);
        let s = self.side;
        let h = (0..s).filter(|r| m[r * s]).count();
        let w = (0..s).filter(|c| m[*c]).count();
        (h, w)
    }

    /// Position ids `[images * side²]` as `Idefics3VisionEmbeddings.forward` computes them.
    pub fn position_ids(&self) -> Vec<u32> {
        let s = self.side;
        let bounds = boundaries(s);
        let mut ids = Vec::with_capacity(self.real.len());
        for img in 0..self.images() {
            let (nb_h, nb_w) = self.extent(img);
            let rows = buckets(&bounds, s, nb_h);
            let cols = buckets(&bounds, s, nb_w);
            let real = self.image(img);
            for r in 0..s {
                for c in 0..s {
                    let id = if real[r * s + c] {
                        rows[r] * s + cols[c]
                    } else {
                        0
                    };
                    ids.push(id as u32);
                }
            }
        }
        ids
    }

    /// The additive key mask `[images, 1, 1, side²]` for the encoder's attention: 0 for real
    /// patches, -inf for padded ones (transformers adds the dtype's minimum, which gives the
    /// same zero weight).
    pub fn key_bias(&self) -> Result<HostTensor> {
        let t = self.side * self.side;
        let data = self
            .real
            .iter()
            .map(|r| if *r { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        HostTensor::new(vec![self.images(), 1, 1, t], data)
    }
}

/// Are `ids` the identity `0..t` for every image (the plain position-embedding path)?
pub fn is_identity(ids: &[u32], t: usize) -> bool {
    t > 0 && ids.iter().enumerate().all(|(i, id)| *id as usize == i % t)
}

/// `torch.arange(1/side, 1.0, 1/side)` in f32, as torch's CPU kernel computes it: the length
/// is `ceil((1 - 1/side) / (1/side))` in f64 (sometimes `side`, not `side - 1`); values come in
/// chunks of 16 as two 8-lane vectors, each lane `f32(f32(start + step * base) + lane * step)`
/// with the sum in f64, and a scalar tail `f32(start + step * i)`. The last bit matters: it
/// decides buckets (checked against torch 2.15 for every side 1..160 and every extent).
fn boundaries(side: usize) -> Vec<f32> {
    const LANES: usize = 8;
    let step = 1.0 / side as f64;
    let n = ((1.0 - step) / step).ceil().max(0.0) as usize;
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while n >= 2 * LANES && i <= n - 2 * LANES {
        for _ in 0..2 {
            let base = (step + step * i as f64) as f32;
            out.extend((0..LANES).map(|k| (base as f64 + k as f64 * step) as f32));
            i += LANES;
        }
    }
    out.extend((i..n).map(|j| (step + step * j as f64) as f32));
    out
}

/// For each of `side` patch rows (or columns), its bucket when `nb` of them are real.
fn buckets(bounds: &[f32], side: usize, nb: usize) -> Vec<usize> {
    let step = 1.0f32 / nb as f32;
    let top = (1.0f64 - 1e-6) as f32;
    (0..side)
        .map(|r| {
            let x = (r as f32 * step).min(top);
            // bucketize(right=True): how many boundaries are <= x.
            bounds.partition_point(|b| *b <= x)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_follow_torch_arange() {
        assert_eq!(boundaries(4), vec![0.25, 0.5, 0.75]);
        // torch.arange(1/3, 1.0, 1/3) has 3 elements (the last ~1.0).
        assert_eq!(boundaries(3).len(), 3);
        assert_eq!(boundaries(6).len(), 6);
        assert_eq!(boundaries(32).len(), 31);
    }

    #[test]
    fn full_images_are_the_identity_except_where_f32_rounding_says_not() {
        for side in [1, 4, 6, 8, 26, 27, 32] {
            let ids = PatchMask::full(2, side).position_ids();
            assert!(is_identity(&ids, side * side), "side {side}");
        }
        // transformers' own output for side 19 (torch 2.15): row and column 12 map to 11.
        let ids = PatchMask::full(1, 19).position_ids();
        assert_eq!(ids[12], 11);
        assert_eq!(ids[12 * 19], 11 * 19);
        assert!(!is_identity(&ids, 19 * 19));
    }

    #[test]
    fn a_partial_image_spreads_over_the_grid() {
        // 6x6 patches of 2 pixels; real pixels: 7 columns (4 patches), 3 rows (2 patches).
        let (side, patch) = (6, 2);
        let w = side * patch;
        let px: Vec<bool> = (0..w * w).map(|i| i / w < 3 && i % w < 7).collect();
        let m = PatchMask::from_pixel_mask(&px, 1, side, patch).unwrap();
        assert!(!m.is_full());
        let ids = m.position_ids();
        // rows 0,1 -> buckets of 0, 0.5 = 0, 3; cols 0..4 -> 0, 0.25, 0.5, 0.75 = 0, 1, 3, 4.
        assert_eq!(&ids[..6], &[0, 1, 3, 4, 0, 0]);
        assert_eq!(&ids[6..12], &[18, 19, 21, 22, 0, 0]);
        assert!(ids[12..].iter().all(|i| *i == 0));
        let bias = m.key_bias().unwrap();
        assert_eq!(bias.shape, vec![1, 1, 1, 36]);
        assert_eq!(bias.data[3], 0.0);
        assert_eq!(bias.data[4], f32::NEG_INFINITY);
    }

    #[test]
    fn masks_that_cannot_be_positioned_are_refused() {
        let (side, patch) = (2, 2);
        let none = vec![false; 16];
        let e = PatchMask::from_pixel_mask(&none, 1, side, patch).unwrap_err();
        assert!(e.to_string().contains("first row or column"), "{e}");
        // Real pixels only bottom-right.
        let br: Vec<bool> = (0..16).map(|i| i == 15).collect();
        assert!(PatchMask::from_pixel_mask(&br, 1, side, patch).is_err());
        let e = PatchMask::from_pixel_mask(&[true; 15], 1, side, patch).unwrap_err();
        assert!(e.to_string().contains("15 values"), "{e}");
    }
}
