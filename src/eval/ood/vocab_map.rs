//! Mapping an external dataset's words onto the model's word-level vocabulary.
//!
//! The model can only read words of [`shapes::vocabulary`] and only say answers of the shapes
//! answer space; anything else is `<unk>` to it. A word is mapped only where a person would
//! accept the shapes word as the same thing; otherwise it is kept and reported, so the OOD
//! report says exactly how much of the external data the model could not read or answer.

use std::collections::{BTreeMap, HashSet};

use crate::eval::shapes::{self, questions, render};

/// easy-VQA word → shapes word. Deliberately short: a wrong synonym would turn a question the
/// model should abstain on into one it is scored as getting right.
///
/// - `rectangle` → `square`: easy-VQA rectangles are axis-aligned four-cornered boxes, and the
///   shapes `square` is the model's only axis-aligned four-cornered shape (its diamond is a
///   rotated one); no other easy-VQA shape competes for it.
/// - `teal` → `cyan`: the same hue (CSS `teal` #008080 is a shade of CSS `darkcyan` #008B8B;
///   the shapes cyan is a lighter 183°), only darker; a person asked "cyan or not?" says yes.
///
/// Not mapped, on purpose: `gray` (shapes has no mid-grey; its `white` is 235/255, and calling
/// grey "white" is wrong), `black` (shapes has no dark colour; its background is near-black),
/// `brown` (orange's hue, but people do not call brown "orange"). Questions about these stay in
/// the set: the right behaviour of the model is to abstain.
pub const SYNONYMS: [(&str, &str); 2] = [("rectangle", "square"), ("teal", "cyan")];

/// Word-level view of a text in the style of the shapes templates: lower case, each
/// punctuation mark a word of its own ("what is it?" → "what is it ?").
pub fn split_words(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len() + 8);
    for ch in text.chars().flat_map(char::to_lowercase) {
        if ch.is_ascii_punctuation() {
            spaced.push(' ');
            spaced.push(ch);
            spaced.push(' ');
        } else {
            spaced.push(ch);
        }
    }
    spaced.split_whitespace().map(str::to_string).collect()
}

/// The model's vocabulary and answer space, with the counts of what did not fit.
#[derive(Debug, Clone)]
pub struct VocabMapper {
    vocabulary: HashSet<String>,
    answer_space: HashSet<String>,
    /// Question words neither in the vocabulary nor in [`SYNONYMS`], with their counts.
    pub unmapped_question_words: BTreeMap<String, usize>,
    /// Answers outside the answer space after [`SYNONYMS`], with their counts.
    pub unmappable_answers: BTreeMap<String, usize>,
}

impl Default for VocabMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl VocabMapper {
    pub fn new() -> Self {
        let answer_space = render::COLORS
            .iter()
            .map(|c| c.0)
            .chain(render::KINDS.iter().map(|k| k.name()))
            .chain(questions::NUMBER_WORDS)
            .chain(questions::ANSWER_WORDS)
            .map(str::to_string)
            .collect();
        Self {
            vocabulary: shapes::vocabulary().into_iter().collect(),
            answer_space,
            unmapped_question_words: BTreeMap::new(),
            unmappable_answers: BTreeMap::new(),
        }
    }

    fn synonym(word: &str) -> Option<&'static str> {
        SYNONYMS.iter().find(|(w, _)| *w == word).map(|(_, s)| *s)
    }

    /// The question in the model's words; unknown words are kept (the tokenizer makes them
    /// `<unk>`) and counted.
    pub fn question(&mut self, text: &str) -> String {
        let mut out = Vec::new();
        for w in split_words(text) {
            if self.vocabulary.contains(&w) {
                out.push(w);
            } else if let Some(s) = Self::synonym(&w) {
                out.push(s.to_string());
            } else {
                *self.unmapped_question_words.entry(w.clone()).or_default() += 1;
                out.push(w);
            }
        }
        out.join(" ")
    }

    /// `(answer, answerable)`: the shapes answer word, or the raw answer (lower-cased, trimmed)
    /// with `false` when the model cannot say it.
    pub fn answer(&mut self, raw: &str) -> (String, bool) {
        let a = raw.trim().to_lowercase();
        if self.answer_space.contains(&a) {
            return (a, true);
        }
        match Self::synonym(&a) {
            Some(s) if self.answer_space.contains(s) => (s.to_string(), true),
            _ => {
                *self.unmappable_answers.entry(a.clone()).or_default() += 1;
                (a, false)
            }
        }
    }
}
