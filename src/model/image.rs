//! Turning untrusted image bytes into the normalised pixel tensor the vision tower expects.
//!
//! The header is read first and the image refused by its declared size before any pixel is
//! decoded, so a 20000×20000 PNG costs a few bytes of parsing, not gigabytes of memory.

use std::io::Cursor;

use image::{imageops::FilterType, DynamicImage, ImageReader, RgbImage};

use crate::backend::HostTensor;
use crate::error::{Error, Result};

/// Largest accepted side, in pixels. Bigger images are almost always mistakes or attacks; the
/// model sees 64–512 pixels anyway.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Largest accepted pixel count (width × height).
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// Largest accepted encoded file.
pub const MAX_IMAGE_BYTES: usize = 64 << 20;

/// Decode PNG or JPEG bytes to RGB after checking the declared dimensions.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::Image("the file is empty".into()));
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(Error::Image(format!(
            "the file is {} bytes; the limit is {MAX_IMAGE_BYTES}",
            bytes.len()
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Image(format!("cannot read the file: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::Image(
            "not a PNG or JPEG image (unrecognised file signature)".into(),
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::Image(format!("cannot read the image header: {e}")))?;
    check_dimensions(w, h)?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Image(format!("cannot read the file: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Error::Image(format!("cannot decode the image: {e}")))?;
    Ok(img.to_rgb8())
}

pub fn check_dimensions(w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Image(format!(
            "the image is {w}x{h}; it has no pixels"
        )));
    }
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || (w as u64) * (h as u64) > MAX_IMAGE_PIXELS {
        return Err(Error::Image(format!(
            "the image is {w}x{h}; the limit is {MAX_IMAGE_SIDE} pixels a side and {MAX_IMAGE_PIXELS} pixels in all. Resize it first"
        )));
    }
    Ok(())
}

/// Resize to `side × side`, rescale to [0, 1] and normalise with mean/std 0.5 (the Idefics3
/// processor's constants): returns `[1, 3, side, side]`.
pub fn image_to_pixels(img: &RgbImage, side: usize) -> Result<HostTensor> {
    let side32 = u32::try_from(side)
        .map_err(|_| Error::Image(format!("model image size {side} is too large")))?;
    let resized;
    let img = if img.width() == side32 && img.height() == side32 {
        img
    } else {
        resized = DynamicImage::ImageRgb8(img.clone())
            .resize_exact(side32, side32, FilterType::Lanczos3)
            .to_rgb8();
        &resized
    };
    let plane = side * side;
    let mut data = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = (p.0[c] as f32 / 255.0 - 0.5) / 0.5;
        }
    }
    HostTensor::new(vec![1, 3, side, side], data)
}
