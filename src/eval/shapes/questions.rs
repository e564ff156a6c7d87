//! Question families over a scene, from easy (existence, colour) to hard (counting, spatial
//! relations). Every answer is one word from [`ANSWER_WORDS`].

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::render::{Scene, COLORS, KINDS};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Exist,
    Color,
    Shape,
    Count,
    CountColor,
    Spatial,
    Size,
}

pub const FAMILIES: [Family; 7] = [
    Family::Exist,
    Family::Color,
    Family::Shape,
    Family::Count,
    Family::CountColor,
    Family::Spatial,
    Family::Size,
];

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Exist => "exist",
            Family::Color => "color",
            Family::Shape => "shape",
            Family::Count => "count",
            Family::CountColor => "count_color",
            Family::Spatial => "spatial",
            Family::Size => "size",
        }
    }
    /// Sampling weight: hard families get more samples so their error is measurable.
    fn weight(self) -> f32 {
        match self {
            Family::Exist => 0.14,
            Family::Color => 0.14,
            Family::Shape => 0.14,
            Family::Count => 0.16,
            Family::CountColor => 0.12,
            Family::Spatial => 0.18,
            Family::Size => 0.12,
        }
    }
}

pub const NUMBER_WORDS: [&str; 7] = ["0", "1", "2", "3", "4", "5", "6"];
pub const ANSWER_WORDS: [&str; 4] = ["yes", "no", "small", "large"];

/// Words of the fixed question templates (the vocabulary the tokenizer is built from).
pub const TEMPLATE_WORDS: [&str; 20] = [
    "is", "there", "a", "what", "color", "the", "shape", "object", "how", "many", "objects", "are",
    "left", "right", "of", "above", "below", "size", "?", "user",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub text: String,
    pub answer: String,
    pub family: Family,
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn pick_family<R: Rng>(rng: &mut R) -> Family {
    let total: f32 = FAMILIES.iter().map(|f| f.weight()).sum();
    let mut x = rng.random::<f32>() * total;
    for f in FAMILIES {
        x -= f.weight();
        if x <= 0.0 {
            return f;
        }
    }
    Family::Spatial
}

/// A question of family `f`, or `None` when the scene cannot support one unambiguously.
fn ask_family<R: Rng>(scene: &Scene, f: Family, rng: &mut R) -> Option<Question> {
    let objs = &scene.objects;
    let q = |text: String, answer: String| {
        Some(Question {
            text,
            answer,
            family: f,
        })
    };
    match f {
        Family::Exist => {
            let (color, kind) = if rng.random_bool(0.5) {
                let o = objs.get(rng.random_range(0..objs.len().max(1)))?;
                (o.color, o.kind)
            } else {
                (
                    rng.random_range(0..COLORS.len()),
                    KINDS[rng.random_range(0..KINDS.len())],
                )
            };
            let present = objs.iter().any(|o| o.color == color && o.kind == kind);
            q(
                format!("is there a {} {} ?", COLORS[color].0, kind.name()),
                yes_no(present),
            )
        }
        Family::Color => {
            let uniq: Vec<_> = objs
                .iter()
                .filter(|o| objs.iter().filter(|p| p.kind == o.kind).count() == 1)
                .collect();
            let o = uniq.choose(rng)?;
            q(
                format!("what color is the {} ?", o.kind.name()),
                o.color_name().to_string(),
            )
        }
        Family::Shape => {
            let uniq: Vec<_> = objs
                .iter()
                .filter(|o| objs.iter().filter(|p| p.color == o.color).count() == 1)
                .collect();
            let o = uniq.choose(rng)?;
            q(
                format!("what shape is the {} object ?", o.color_name()),
                o.kind.name().to_string(),
            )
        }
        Family::Count => q(
            "how many objects are there ?".into(),
            NUMBER_WORDS.get(objs.len())?.to_string(),
        ),
        Family::CountColor => {
            let color = if rng.random_bool(0.75) {
                objs.get(rng.random_range(0..objs.len().max(1)))?.color
            } else {
                rng.random_range(0..COLORS.len())
            };
            let n = objs.iter().filter(|o| o.color == color).count();
            q(
                format!("how many {} objects are there ?", COLORS[color].0),
                NUMBER_WORDS.get(n)?.to_string(),
            )
        }
        Family::Spatial => {
            if objs.len() < 2 {
                return None;
            }
            let mut idx: Vec<usize> = (0..objs.len()).collect();
            idx.shuffle(rng);
            let (a, b) = (&objs[idx[0]], &objs[idx[1]]);
            let rels = ["left of", "right of", "above", "below"];
            let rel = rels[rng.random_range(0..rels.len())];
            let (dx, dy) = (a.cx - b.cx, a.cy - b.cy);
            // Pairs too close on the asked axis would be ambiguous even to a person.
            let (margin, truth) = match rel {
                "left of" => (dx.abs(), dx < 0.0),
                "right of" => (dx.abs(), dx > 0.0),
                "above" => (dy.abs(), dy < 0.0),
                _ => (dy.abs(), dy > 0.0),
            };
            if margin < 3.0 {
                return None;
            }
            q(
                format!("is the {} {rel} the {} ?", a.describe(), b.describe()),
                yes_no(truth),
            )
        }
        Family::Size => {
            let o = objs.get(rng.random_range(0..objs.len().max(1)))?;
            q(
                format!("what size is the {} ?", o.describe()),
                o.size.name().to_string(),
            )
        }
    }
}

/// Follow-up questions for training chats, which the test distribution never sees (only a
/// chat's first question is ever evaluated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    all(feature = "cli", not(target_arch = "wasm32")),
    derive(clap::ValueEnum)
)]
pub enum Followups {
    /// Drawn like first questions, family by weight.
    Random,
    /// "what shape is the {colour} object ?" for each uniquely coloured object, in random
    /// order, then random ones: dense supervision of every object's shape.
    Shapes,
}

impl Followups {
    pub fn ask<R: Rng>(self, scene: &Scene, rng: &mut R, n: usize) -> Vec<Question> {
        let mut out = Vec::with_capacity(n);
        if self == Followups::Shapes {
            let objs = &scene.objects;
            let mut uniq: Vec<_> = objs
                .iter()
                .filter(|o| objs.iter().filter(|p| p.color == o.color).count() == 1)
                .collect();
            uniq.shuffle(rng);
            out.extend(uniq.into_iter().take(n).map(|o| Question {
                text: format!("what shape is the {} object ?", o.color_name()),
                answer: o.kind.name().to_string(),
                family: Family::Shape,
            }));
        }
        while out.len() < n {
            out.push(ask(scene, rng));
        }
        out
    }
}

/// One question about `scene`, family drawn by weight, falling back to always-possible families.
pub fn ask<R: Rng>(scene: &Scene, rng: &mut R) -> Question {
    for _ in 0..8 {
        let f = pick_family(rng);
        if let Some(q) = ask_family(scene, f, rng) {
            return q;
        }
    }
    let n = scene.objects.len().min(NUMBER_WORDS.len() - 1);
    Question {
        text: "how many objects are there ?".into(),
        answer: NUMBER_WORDS[n].into(),
        family: Family::Count,
    }
}
