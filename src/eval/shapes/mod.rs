//! "shapes": a procedural VQA dataset, deterministic from (split, index).
//!
//! Each split draws from its own seed space, so train/dev/val/test never share a sample seed.
//! Sample `i` of a split is generated independently of every other sample: any subset can be
//! regenerated on any machine (and in the browser) without storing images.

pub mod questions;
pub mod render;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use questions::{Family, Followups, Question, FAMILIES};

/// How a sample is drawn: evaluation always uses [`Draw::EVAL`]; training may draw simpler
/// scenes or other follow-up questions (see `train::TrainOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Scenes hold 1 to this many objects.
    pub max_objects: usize,
    /// What the questions after the first ask.
    pub followups: Followups,
}

impl Draw {
    pub const EVAL: Draw = Draw {
        max_objects: MAX_OBJECTS,
        followups: Followups::Random,
    };
}

use crate::error::{Error, Result};

pub const IMAGE_SIDE: u32 = 64;
pub const MAX_OBJECTS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Val,
    Test,
}

impl Split {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "dev" => Ok(Split::Dev),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(Error::Invalid(format!(
                "unknown split `{other}`; use train, dev, val or test"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
    /// Disjoint seed spaces: the split id occupies the top 16 bits of every sample seed.
    fn id(self) -> u64 {
        match self {
            Split::Train => 0x7261,
            Split::Dev => 0x6465,
            Split::Val => 0x7661,
            Split::Test => 0x7465,
        }
    }
    /// Default evaluation size (train is unbounded).
    pub fn default_len(self) -> usize {
        match self {
            Split::Train => usize::MAX,
            Split::Dev => 4000,
            Split::Val => 2000,
            Split::Test => 2000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub split: Split,
    pub index: u64,
    pub scene: render::Scene,
    pub image: image::RgbImage,
    pub question: Question,
}

pub fn sample(split: Split, index: u64) -> Sample {
    sample_with_followups(split, index, 0, Draw::EVAL).0
}

/// Sample `index` plus `extra` further questions about the same image (a multi-turn chat for
/// training). The first question is exactly [`sample`]'s: the extra ones continue its stream.
pub fn sample_with_followups(
    split: Split,
    index: u64,
    extra: usize,
    draw: Draw,
) -> (Sample, Vec<Question>) {
    let seed = (split.id() << 48) | (index & ((1 << 48) - 1));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.random_range(1..=draw.max_objects.clamp(1, MAX_OBJECTS));
    let scene = render::random_scene(&mut rng, IMAGE_SIDE, n);
    let image = render::render(&scene, &mut rng);
    let question = questions::ask(&scene, &mut rng);
    let more = draw.followups.ask(&scene, &mut rng, extra);
    (
        Sample {
            split,
            index,
            scene,
            image,
            question,
        },
        more,
    )
}

/// Every word the dataset's questions and answers use: the tokenizer's vocabulary.
pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    words.extend(questions::TEMPLATE_WORDS.iter().map(|s| s.to_string()));
    words.extend(["assistant", ":"].iter().map(|s| s.to_string()));
    words.extend(render::COLORS.iter().map(|c| c.0.to_string()));
    words.extend(render::KINDS.iter().map(|k| k.name().to_string()));
    words.extend(questions::NUMBER_WORDS.iter().map(|s| s.to_string()));
    words.extend(questions::ANSWER_WORDS.iter().map(|s| s.to_string()));
    words
}
