//! Lower-quality images at fixed severities, for the "degraded images" shift.
//!
//! Each severity is chosen for the 64×64 shapes images (objects 13–19 px across, colours
//! jittered by ±18 per channel, background near 25): strong enough to move the pixels well
//! outside what a model trained on clean renders has seen, mild enough that a person still
//! names every object's colour, shape and position. Everything is deterministic in the seed.

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::OodKind;
use crate::error::{Error, Result};

/// Standard deviation of the additive noise, in 8-bit levels: about twice the per-object colour
/// jitter of the renderer, so colour can no longer be read from single pixels, while the
/// averaged colour of a 13-pixel object is still obvious.
pub const NOISE_SIGMA: f32 = 40.0;

/// Gaussian blur sigma in pixels: rounds the corners of a small (13 px) square, diamond or
/// cross and bleeds colour into the background, while shapes 2+ px apart stay separate.
pub const BLUR_SIGMA: f32 = 1.5;

/// JPEG quality (1–100): at 10 the libjpeg tables are scaled 5×, so 8×8 blocking and
/// washed-out chroma look like a heavily re-shared photo; the shapes are about two blocks wide,
/// so their colour and outline survive.
pub const JPEG_QUALITY: u8 = 10;

/// Exposure gain applied after the gamma: one stop under-exposed. With the gamma below, the
/// brightest colour (white, 235) lands near 113 and the darkest one (purple) keeps a visible
/// ~85 in its strongest channel; orange (116, 49, 5) and red (99, 8, 8) stay apart. At 0.45
/// and gamma 1.8 (tried first) orange turned brown and purple sank into the background.
pub const LOW_LIGHT_GAIN: f32 = 0.5;
/// Gamma > 1 crushes dark and mid tones more than highlights, as an under-exposed camera does.
pub const LOW_LIGHT_GAMMA: f32 = 1.5;
/// Sensor noise at low light, in 8-bit levels after darkening.
pub const LOW_LIGHT_NOISE_SIGMA: f32 = 3.0;

/// `img` with independent Gaussian noise of deviation `sigma` on every channel.
pub fn gaussian_noise(img: &RgbImage, sigma: f32, seed: u64) -> Result<RgbImage> {
    let normal = Normal::new(0.0f32, sigma)
        .map_err(|e| Error::Invalid(format!("noise sigma {sigma}: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (*c as f32 + normal.sample(&mut rng))
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    Ok(out)
}

pub fn blur(img: &RgbImage, sigma: f32) -> RgbImage {
    image::imageops::blur(img, sigma)
}

/// Encode as JPEG at `quality` and decode back: the artefacts are the codec's own.
pub fn jpeg_reencode(img: &RgbImage, quality: u8) -> Result<RgbImage> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(img)
        .map_err(|e| Error::Image(format!("JPEG encoding at quality {quality}: {e}")))?;
    let decoded = image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg)
        .map_err(|e| Error::Image(format!("decoding our own JPEG: {e}")))?;
    let out = decoded.to_rgb8();
    if out.dimensions() != img.dimensions() {
        return Err(Error::Image(format!(
            "JPEG round trip changed the size from {:?} to {:?}",
            img.dimensions(),
            out.dimensions()
        )));
    }
    Ok(out)
}

/// Darken with [`LOW_LIGHT_GAMMA`] and [`LOW_LIGHT_GAIN`], then add [`LOW_LIGHT_NOISE_SIGMA`]
/// noise: the noise comes last because a dark sensor's read noise does not scale with light.
pub fn low_light(img: &RgbImage, seed: u64) -> Result<RgbImage> {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            let v = (*c as f32 / 255.0).powf(LOW_LIGHT_GAMMA) * LOW_LIGHT_GAIN * 255.0;
            *c = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    gaussian_noise(&out, LOW_LIGHT_NOISE_SIGMA, seed)
}

/// The degradation of `kind` at its fixed severity. Kinds that do not touch the image
/// (conversational, easy-VQA) are refused rather than passed through, so a mix-up shows.
pub fn degrade(kind: OodKind, img: &RgbImage, seed: u64) -> Result<RgbImage> {
    match kind {
        OodKind::Noise => gaussian_noise(img, NOISE_SIGMA, seed),
        OodKind::Blur => Ok(blur(img, BLUR_SIGMA)),
        OodKind::Jpeg => jpeg_reencode(img, JPEG_QUALITY),
        OodKind::LowLight => low_light(img, seed),
        OodKind::Conversational | OodKind::EasyVqa => Err(Error::Invalid(format!(
            "`{kind}` is not an image degradation; use noise, blur, jpeg or low_light"
        ))),
    }
}
