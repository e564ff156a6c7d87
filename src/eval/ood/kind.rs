//! The kinds of distribution shift the OOD test sets apply, after the paper's scenario:
//! conversational questions, lower-quality images, and a dataset nobody here wrote.

use crate::error::{Error, Result};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OodKind {
    /// The shapes question reworded as someone would type it in a chat.
    Conversational,
    /// Gaussian sensor noise on the image.
    Noise,
    /// Gaussian blur (defocus or a small upscaled photo).
    Blur,
    /// Re-encoded as a low-quality JPEG (messenger apps, screenshots of screenshots).
    Jpeg,
    /// Under-exposed: darker, gamma-crushed, with a little noise.
    LowLight,
    /// A question of the external easy-VQA test split.
    EasyVqa,
}

impl OodKind {
    /// Order of the cycle in [`super::ood_item`]: any prefix whose length is a multiple of six
    /// holds every kind equally often.
    pub const ALL: [OodKind; 6] = [
        OodKind::Conversational,
        OodKind::Noise,
        OodKind::Blur,
        OodKind::Jpeg,
        OodKind::LowLight,
        OodKind::EasyVqa,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OodKind::Conversational => "conversational",
            OodKind::Noise => "noise",
            OodKind::Blur => "blur",
            OodKind::Jpeg => "jpeg",
            OodKind::LowLight => "low_light",
            OodKind::EasyVqa => "easy_vqa",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                Error::Invalid(format!(
                    "unknown OOD kind `{s}`; use one of {}",
                    names.join(", ")
                ))
            })
    }

    /// Whether the shift is applied to the image (the question stays the training one).
    pub fn is_image_degradation(self) -> bool {
        matches!(
            self,
            OodKind::Noise | OodKind::Blur | OodKind::Jpeg | OodKind::LowLight
        )
    }
}

impl std::fmt::Display for OodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
