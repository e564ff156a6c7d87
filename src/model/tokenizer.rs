//! The tokenizer: a Hugging Face `tokenizer.json` read and written with the `tokenizers` crate
//! (default features off, so it also builds for wasm), plus the Idefics3 special tokens the
//! prompt needs.

use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// Special tokens of the Idefics3 / SmolVLM chat format, in id order for tokenizers we build.
pub const SPECIAL_TOKENS: [&str; 7] = [
    "<unk>",
    "<pad>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
];

/// Ids of the special tokens a prompt is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub im_start: u32,
    pub end_of_utterance: u32,
    pub fake_image: u32,
    pub global_img: u32,
    pub image: u32,
}

#[derive(Clone)]
pub struct VqaTokenizer {
    inner: Tokenizer,
    pub special: SpecialIds,
}

impl std::fmt::Debug for VqaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VqaTokenizer")
            .field("vocab", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl VqaTokenizer {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        Self::from_tokenizer(inner)
    }

    fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "tokenizer has no `{t}` token, which the Idefics3 prompt needs"
                ))
            })
        };
        let pad = inner
            .token_to_id("<pad>")
            .or_else(|| inner.token_to_id("<|endoftext|>"))
            .unwrap_or(0);
        let special = SpecialIds {
            pad,
            im_start: id("<|im_start|>")?,
            end_of_utterance: id("<end_of_utterance>")?,
            fake_image: id("<fake_token_around_image>")?,
            global_img: id("<global-img>")?,
            image: id("<image>")?,
        };
        Ok(Self { inner, special })
    }

    /// A word-level tokenizer over `words` (lower-cased, split on whitespace and punctuation),
    /// with [`SPECIAL_TOKENS`] first. Unknown words map to `<unk>`.
    pub fn build_word_level(words: &[String]) -> Result<Self> {
        let mut vocab: Vec<(String, u32)> = Vec::new();
        for w in SPECIAL_TOKENS
            .iter()
            .map(|s| s.to_string())
            .chain(words.iter().map(|w| w.to_lowercase()))
        {
            if !vocab.iter().any(|(v, _)| *v == w) {
                let id = vocab.len() as u32;
                vocab.push((w, id));
            }
        }
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token("<unk>".into())
            .build()
            .map_err(tok_err)?;
        let mut inner = Tokenizer::new(model);
        inner.with_normalizer(Some(Lowercase)).map_err(tok_err)?;
        inner.with_pre_tokenizer(Some(Whitespace {}));
        let specials: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner.add_special_tokens(specials).map_err(tok_err)?;
        Self::from_tokenizer(inner)
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(tok_err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }

    /// Encode plain text (no special tokens added around it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// Id of `<unk>` if the vocabulary has one (word-level tokenizers do).
    pub fn unk_id(&self) -> Option<u32> {
        self.inner.token_to_id("<unk>")
    }
}
