//! easy-VQA (PyPI `easy-vqa==1.0`, MIT, by Victor Zhou): the external OOD set. One coloured
//! shape on a light background, 64×64, with yes/no, colour and shape questions written by
//! someone else's generator, in someone else's words.
//!
//! Only the test split is read. `make easy-vqa` installs it under `.cache/easy-vqa`; the data
//! folder holds `answers.txt`, `test/questions.json` (a JSON list of
//! `[question, answer, image_id]`) and `test/images/<id>.png`. The files are treated as
//! untrusted: sizes and counts are capped before anything is allocated.

use std::collections::{BTreeMap, HashSet};

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::vocab_map::VocabMapper;
use super::{Item, OodKind};
use crate::error::{Error, Result};
use crate::eval::shapes::{Split, IMAGE_SIDE};

/// The install command every "not found" message gives.
pub const INSTALL_HINT: &str = "run `make easy-vqa` (pip install --target .cache/easy-vqa easy-vqa==1.0) or set RELVQA_EASY_VQA to its easy_vqa/data folder";

/// 1.0 has 9,673 test questions over 1,000 images.
const MAX_QUESTIONS: usize = 500_000;
const MAX_IMAGES: usize = 50_000;
const MAX_QUESTION_CHARS: usize = 1_000;
/// Fixed order of the questions for [`EasyVqa::pick`], independent of every other seed.
const ORDER_SEED: u64 = 0x6561_7379_7671_6131;

/// One easy-VQA test question, in the model's words and in the original ones.
#[derive(Debug, Clone, PartialEq)]
pub struct EasyVqaQuestion {
    /// Position in `test/questions.json`.
    pub number: usize,
    pub raw_question: String,
    /// Lower-cased, `?` split off, [`super::vocab_map::SYNONYMS`] applied.
    pub question: String,
    pub raw_answer: String,
    /// The shapes answer word, or the raw one when the model cannot say it.
    pub answer: String,
    /// Whether the model can say the answer at all; the question itself may still hold
    /// `<unk>` words (see [`EasyVqa::unmapped_question_words`]).
    pub answerable: bool,
    pub image_id: u32,
    /// `easy_vqa_yes_no`, `easy_vqa_color` or `easy_vqa_shape`.
    pub family: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct EasyVqa {
    questions: Vec<EasyVqaQuestion>,
    images: BTreeMap<u32, RgbImage>,
    /// Seeded permutation of question numbers: its first half serves the test split, the rest
    /// the others, so a threshold tuned on val OOD items never saw a test easy-VQA question.
    order: Vec<usize>,
    /// Question words the model cannot read (they become `<unk>`), with their counts.
    pub unmapped_question_words: BTreeMap<String, usize>,
    /// Answers the model cannot say, with the number of questions that have them.
    pub unmappable_answers: BTreeMap<String, usize>,
}

fn family(raw_answer: &str, raw_question: &str) -> &'static str {
    match raw_answer {
        "yes" | "no" => "easy_vqa_yes_no",
        _ if raw_question.contains("color") => "easy_vqa_color",
        _ => "easy_vqa_shape",
    }
}

/// Decode one easy-VQA image (PNG) to RGB at the shapes size, naming `name` in any error.
pub fn decode_image(name: &str, bytes: &[u8]) -> Result<RgbImage> {
    let img = crate::model::image::decode_image(bytes)
        .map_err(|e| Error::Dataset(format!("`{name}`: {e}; reinstall with `make easy-vqa`")))?;
    if img.dimensions() == (IMAGE_SIDE, IMAGE_SIDE) {
        return Ok(img);
    }
    Ok(image::imageops::resize(
        &img,
        IMAGE_SIDE,
        IMAGE_SIDE,
        image::imageops::FilterType::Triangle,
    ))
}

impl EasyVqa {
    /// Build from the files' contents; `image(id)` supplies decoded images (from disk natively,
    /// from fetched bytes in the browser). `label` names the data folder in error messages.
    pub fn parse(
        label: &str,
        answers_txt: &str,
        questions_json: &[u8],
        mut image: impl FnMut(u32) -> Result<RgbImage>,
    ) -> Result<Self> {
        let answers: HashSet<&str> = answers_txt
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if answers.is_empty() {
            return Err(Error::Dataset(format!(
                "`{label}/answers.txt` lists no answers; reinstall with `make easy-vqa`"
            )));
        }
        let qfile = format!("{label}/test/questions.json");
        let raw: Vec<(String, String, u32)> = serde_json::from_slice(questions_json)
            .map_err(|e| {
                Error::Dataset(format!(
                    "`{qfile}` is not a JSON list of [question, answer, image_id]: {e}; reinstall with `make easy-vqa`"
                ))
            })?;
        if raw.is_empty() || raw.len() > MAX_QUESTIONS {
            return Err(Error::Dataset(format!(
                "`{qfile}` has {} questions; expected 1 to {MAX_QUESTIONS}",
                raw.len()
            )));
        }
        let mut mapper = VocabMapper::new();
        let mut questions = Vec::with_capacity(raw.len());
        let mut images = BTreeMap::new();
        for (number, (q, a, image_id)) in raw.into_iter().enumerate() {
            if q.chars().count() > MAX_QUESTION_CHARS || q.trim().is_empty() {
                return Err(Error::Dataset(format!(
                    "`{qfile}` question {number} is empty or longer than {MAX_QUESTION_CHARS} characters"
                )));
            }
            if !answers.contains(a.trim()) {
                return Err(Error::Dataset(format!(
                    "`{qfile}` question {number} has answer `{a}`, which `{label}/answers.txt` does not list; reinstall with `make easy-vqa`"
                )));
            }
            if !images.contains_key(&image_id) {
                if images.len() >= MAX_IMAGES {
                    return Err(Error::Dataset(format!(
                        "`{qfile}` refers to more than {MAX_IMAGES} images"
                    )));
                }
                images.insert(image_id, image(image_id)?);
            }
            let (answer, answerable) = mapper.answer(&a);
            questions.push(EasyVqaQuestion {
                number,
                question: mapper.question(&q),
                family: family(a.trim(), &q),
                raw_question: q,
                raw_answer: a,
                answer,
                answerable,
                image_id,
            });
        }
        let mut order: Vec<usize> = (0..questions.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(ORDER_SEED));
        Ok(Self {
            questions,
            images,
            order,
            unmapped_question_words: mapper.unmapped_question_words,
            unmappable_answers: mapper.unmappable_answers,
        })
    }

    pub fn questions(&self) -> &[EasyVqaQuestion] {
        &self.questions
    }

    pub fn len(&self) -> usize {
        self.questions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// Questions whose answer the model cannot say (it should abstain on them).
    pub fn unanswerable(&self) -> usize {
        self.questions.iter().filter(|q| !q.answerable).count()
    }

    pub fn image(&self, image_id: u32) -> Option<&RgbImage> {
        self.images.get(&image_id)
    }

    /// Question number `perm(k)` for `split`: a fixed seeded permutation, test drawing from one
    /// half of the questions and every other split from the other half, cycling once a half is
    /// used up.
    pub fn pick(&self, split: Split, k: u64) -> Result<usize> {
        let half = self.order.len().div_ceil(2);
        let pool = match split {
            Split::Test => &self.order[..half],
            _ if half < self.order.len() => &self.order[half..],
            _ => &self.order[..],
        };
        if pool.is_empty() {
            return Err(Error::Dataset(format!(
                "no easy-VQA questions are loaded; {INSTALL_HINT}, then load it with EasyVqa::load"
            )));
        }
        Ok(pool[(k % pool.len() as u64) as usize])
    }

    /// Question `number` as an evaluation item (id `easy-vqa/<number>`, split `easy-vqa`).
    pub fn item(&self, number: usize) -> Result<Item> {
        let q = self.questions.get(number).ok_or_else(|| {
            Error::Invalid(format!(
                "easy-VQA has {} test questions; there is no number {number}",
                self.questions.len()
            ))
        })?;
        let image = self.images.get(&q.image_id).cloned().ok_or_else(|| {
            Error::Dataset(format!("easy-VQA image {} was not loaded", q.image_id))
        })?;
        Ok(Item {
            id: format!("easy-vqa/{number}"),
            split: "easy-vqa".into(),
            family: q.family.into(),
            ood: Some(OodKind::EasyVqa),
            image,
            question: q.question.clone(),
            answers: vec![q.answer.clone()],
            answerable: q.answerable,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod fs {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The 1.0 test file is 0.5 MB; 32 MiB leaves room for a larger regenerated set.
    const MAX_QUESTIONS_BYTES: u64 = 32 << 20;
    const MAX_ANSWERS_BYTES: u64 = 64 << 10;
    /// A 64×64 RGB PNG is at most ~12 KB.
    const MAX_PNG_BYTES: u64 = 4 << 20;

    fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
        let name = path.display();
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::Dataset(format!("`{name}` cannot be read ({e}); {INSTALL_HINT}"))
        })?;
        if meta.len() > cap {
            return Err(Error::Dataset(format!(
                "`{name}` is {} bytes; the limit is {cap}. Is this the easy-VQA data folder?",
                meta.len()
            )));
        }
        std::fs::read(path).map_err(|e| Error::io(name.to_string(), e))
    }

    impl EasyVqa {
        /// `RELVQA_EASY_VQA` if set, else where `make easy-vqa` installs the data.
        pub fn default_dir() -> PathBuf {
            std::env::var_os("RELVQA_EASY_VQA")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".cache/easy-vqa/easy_vqa/data"))
        }

        /// Read the test split from an easy-VQA `data` folder.
        pub fn load(dir: &Path) -> Result<Self> {
            let qpath = dir.join("test").join("questions.json");
            if !qpath.is_file() {
                return Err(Error::Dataset(format!(
                    "easy-VQA is not installed: `{}` does not exist; {INSTALL_HINT}",
                    qpath.display()
                )));
            }
            let apath = dir.join("answers.txt");
            let answers = String::from_utf8(read_capped(&apath, MAX_ANSWERS_BYTES)?)
                .map_err(|e| Error::Dataset(format!("`{}`: {e}", apath.display())))?;
            let questions = read_capped(&qpath, MAX_QUESTIONS_BYTES)?;
            let images = dir.join("test").join("images");
            let label = dir.display().to_string();
            Self::parse(&label, &answers, &questions, |id| {
                let p = images.join(format!("{id}.png"));
                let bytes = read_capped(&p, MAX_PNG_BYTES)?;
                decode_image(&p.display().to_string(), &bytes)
            })
        }
    }
}
