//! Out-of-distribution test sets: the paper's "conversational questions and lower-quality
//! images" plus an external dataset (easy-VQA), and their ID;OOD mixtures.
//!
//! Every item is deterministic from (split, index): the OOD counterpart of shapes question `i`
//! is built from the same sample `i` (reworded question or degraded image), so a mixture swaps
//! like for like and the ID/OOD difference is the shift alone.

pub mod degrade;
pub mod easyvqa;
pub mod kind;
pub mod mixture;
pub mod rephrase;
pub mod vocab_map;

pub use easyvqa::{EasyVqa, EasyVqaQuestion};
pub use kind::OodKind;
pub use mixture::mixture;

use crate::error::Result;
use crate::eval::shapes::{self, Split};

/// One question to evaluate, whatever its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `test/123` for shapes, `test/123/<kind>` for its OOD counterparts, `easy-vqa/4711`.
    pub id: String,
    pub split: String,
    /// The shapes family (also for its conversational and degraded versions, so per-family
    /// results can be compared under shift), or `easy_vqa_<type>`.
    pub family: String,
    pub ood: Option<OodKind>,
    pub image: image::RgbImage,
    pub question: String,
    /// Accepted answers (one word each).
    pub answers: Vec<String>,
    /// False when no answer above is a word the model can say: abstaining is the only right
    /// response.
    pub answerable: bool,
}

/// The plain shapes sample `index` of `split`.
pub fn id_item(split: Split, index: u64) -> Item {
    sample_item(shapes::sample(split, index))
}

/// The in-distribution item of an already generated shapes sample.
pub fn sample_item(s: shapes::Sample) -> Item {
    Item {
        id: format!("{}/{}", s.split.name(), s.index),
        split: s.split.name().into(),
        family: s.question.family.name().into(),
        ood: None,
        image: s.image,
        question: s.question.text,
        answers: vec![s.question.answer],
        answerable: true,
    }
}

/// The OOD counterpart of question `index`: its kind cycles through [`OodKind::ALL`], so every
/// prefix of a multiple of six items holds each kind equally often.
pub fn ood_item(split: Split, index: u64, easy: &EasyVqa) -> Result<Item> {
    let kinds = OodKind::ALL;
    let kind = kinds[(index % kinds.len() as u64) as usize];
    ood_item_of_kind(split, index, kind, easy)
}

/// Seed of the random part of a degradation: distinct per split, index and kind, and unrelated
/// to the sample's own seed (so the noise does not correlate with the scene it is drawn on).
fn degrade_seed(split: Split, index: u64, kind: OodKind) -> u64 {
    let mut x = index ^ 0x6f6f_645f_6465_6772;
    for b in split.name().bytes().chain(kind.name().bytes()) {
        x = (x ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(x)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Question `index` under shift `kind`. For easy-VQA, `index` only selects which question:
/// number `perm(index)` of a fixed permutation ([`EasyVqa::pick`]), so the items are distinct
/// for every index below half the easy-VQA test set (4,837 for version 1.0).
pub fn ood_item_of_kind(split: Split, index: u64, kind: OodKind, easy: &EasyVqa) -> Result<Item> {
    if kind == OodKind::EasyVqa {
        return easy.item(easy.pick(split, index)?);
    }
    let mut item = id_item(split, index);
    item.id = format!("{}/{kind}", item.id);
    item.ood = Some(kind);
    if kind == OodKind::Conversational {
        let s = shapes::sample(split, index);
        item.question = rephrase::rephrase(&s.question, splitmix64(index))?.text;
    } else {
        item.image = degrade::degrade(kind, &item.image, degrade_seed(split, index, kind))?;
    }
    Ok(item)
}
