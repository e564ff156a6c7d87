//! Conversational rewordings of shapes questions, for the "conversational questions" shift.
//!
//! Training only ever sees the fixed templates of [`crate::eval::shapes::questions`]; every
//! template here adds chat filler ("hey", "i was wondering", "for me") that is not in the
//! model's word-level vocabulary, so it reaches the model as `<unk>`. The content words (colour,
//! shape, relation) are kept verbatim, so a robust reader can still answer, and the answer is
//! unchanged.

use crate::error::{Error, Result};
use crate::eval::shapes::{Family, Question};

const EXIST: [&str; 4] = [
    "hey , do you see a {a} anywhere in this picture ?",
    "quick question : is there any {a} in here ?",
    "i was wondering , can you spot a {a} ?",
    "could you check for me whether a {a} shows up ?",
];
const COLOR: [&str; 4] = [
    "hey , could you tell me what color the {a} is ?",
    "so which color would you say that {a} has ?",
    "i am curious , what color is that {a} over there ?",
    "do you happen to know the color of the {a} ?",
];
const SHAPE: [&str; 4] = [
    "can you tell me which shape the {a} thing is ?",
    "hmm , what kind of shape is that {a} one ?",
    "hey , the {a} object , what shape would you call it ?",
    "i was wondering what shape the {a} thing has ?",
];
const COUNT: [&str; 4] = [
    "i was wondering how many things you can see ?",
    "could you count all the shapes in this picture for me ?",
    "hey , how many things are in here altogether ?",
    "roughly how many objects do you see in this one ?",
];
const COUNT_COLOR: [&str; 4] = [
    "i was wondering how many {a} things you can see ?",
    "could you count the {a} ones for me ?",
    "hey , how many of these things are {a} ?",
    "quick question : how many {a} shapes do you see ?",
];
const SPATIAL: [&str; 4] = [
    "would you say the {a} is {rel} the {b} ?",
    "hey , is that {a} sitting {rel} the {b} ?",
    "i think the {a} is {rel} the {b} , is that true ?",
    "can you check if the {a} is {rel} the {b} for me ?",
];
const SIZE: [&str; 4] = [
    "would you call the {a} small or large ?",
    "hey , how big is the {a} , roughly ?",
    "i was wondering , what size would you say the {a} is ?",
    "quick question : is the {a} a small one or a large one ?",
];

/// Every conversational template of `family`, in the order `variant` indexes them.
pub fn templates(family: Family) -> &'static [&'static str] {
    match family {
        Family::Exist => &EXIST,
        Family::Color => &COLOR,
        Family::Shape => &SHAPE,
        Family::Count => &COUNT,
        Family::CountColor => &COUNT_COLOR,
        Family::Spatial => &SPATIAL,
        Family::Size => &SIZE,
    }
}

/// The slots a training question fills in its template: `a` and `b` are colour/shape phrases,
/// `rel` the spatial relation as the training template spells it.
struct Slots<'q> {
    a: &'q str,
    rel: &'q str,
    b: &'q str,
}

/// Recover the slots by undoing the training template; a text that does not follow it means
/// the question did not come from [`crate::eval::shapes`], and rewording it would be guesswork.
fn slots(q: &Question) -> Result<Slots<'_>> {
    let t = q.text.as_str();
    let between = |pre: &str, post: &str| t.strip_prefix(pre).and_then(|r| r.strip_suffix(post));
    fn one(a: Option<&str>) -> Option<(&str, &str, &str)> {
        a.map(|a| (a, "", ""))
    }
    let found = match q.family {
        Family::Exist => one(between("is there a ", " ?")),
        Family::Color => one(between("what color is the ", " ?")),
        Family::Shape => one(between("what shape is the ", " object ?")),
        Family::Count => (t == "how many objects are there ?").then_some(("", "", "")),
        Family::CountColor => one(between("how many ", " objects are there ?")),
        Family::Size => one(between("what size is the ", " ?")),
        Family::Spatial => between("is the ", " ?").and_then(|mid| {
            ["left of", "right of", "above", "below"]
                .into_iter()
                .find_map(|rel| {
                    let (a, b) = mid.split_once(&format!(" {rel} the "))?;
                    Some((a, rel, b))
                })
        }),
    };
    match found {
        Some((a, rel, b)) => Ok(Slots { a, rel, b }),
        None => Err(Error::Invalid(format!(
            "question `{}` does not follow the shapes `{}` template, so it cannot be reworded",
            q.text,
            q.family.name()
        ))),
    }
}

/// The relation as people say it in a sentence ("to the left of"); the relation word itself,
/// which carries the meaning, is kept.
fn spoken_relation(rel: &str) -> &str {
    match rel {
        "left of" => "to the left of",
        "right of" => "to the right of",
        other => other,
    }
}

/// `q` reworded with conversational template number `variant` (modulo the family's count).
/// The answer and family are unchanged.
pub fn rephrase(q: &Question, variant: u64) -> Result<Question> {
    let s = slots(q)?;
    let ts = templates(q.family);
    let t = ts[(variant % ts.len() as u64) as usize];
    let text = t
        .replace("{a}", s.a)
        .replace("{rel}", spoken_relation(s.rel))
        .replace("{b}", s.b);
    Ok(Question {
        text,
        answer: q.answer.clone(),
        family: q.family,
    })
}
