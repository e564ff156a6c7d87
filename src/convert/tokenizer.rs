//! A Hugging Face `tokenizer.json` built from a GGUF file's vocabulary and merges with the
//! `tokenizers` crate: byte-level BPE, digits split one by one before the GPT-2 regex (what
//! llama.cpp calls the `smollm` pre-tokenizer and SmolLM2's own tokenizer.json does), the GGUF
//! control tokens as special tokens, then the Idefics3 tokens SmolVLM adds after the text
//! vocabulary so `<image>` lands on SmolVLM-256M's `image_token_id`.

use ahash::AHashMap;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::convert::gguf::GgufLlama;
use crate::error::{Error, Result};

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// How many tokens [`idefics3_added_tokens`] adds before padding (`<global-img>`, 36 tile
/// tokens, `<fake_token_around_image>`, `<image>`, `<end_of_utterance>`).
pub const IDEFICS3_TOKENS: usize = 40;
/// `<image>`'s offset after the text vocabulary.
pub const IMAGE_TOKEN_OFFSET: usize = 38;

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const CONTROL: i32 = 3;

/// The tokens appended after the text vocabulary, in id order: SmolVLM's layout puts
/// `<global-img>` first, the 6x6 tile tokens, then `<fake_token_around_image>` and `<image>`
/// (49190 for a 49152-token SmolLM2), and `<end_of_utterance>` last in the padded vocabulary.
pub fn idefics3_added_tokens(padded_to: usize, text_vocab: usize) -> Vec<String> {
    let mut t = vec!["<global-img>".to_string()];
    for r in 1..=6 {
        for c in 1..=6 {
            t.push(format!("<row_{r}_col_{c}>"));
        }
    }
    t.push("<fake_token_around_image>".into());
    t.push("<image>".into());
    while text_vocab + t.len() + 1 < padded_to {
        t.push(format!("<|reserved_{}|>", t.len()));
    }
    t.push("<end_of_utterance>".into());
    t
}

/// The tokenizer for a converted GGUF model whose embedding has `padded_vocab` rows.
pub fn from_gguf(g: &GgufLlama, padded_vocab: usize) -> Result<Tokenizer> {
    let vocab: AHashMap<String, u32> = g
        .vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = g
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("GGUF merge `{m}` is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(tok_err)?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let control: Vec<AddedToken> = g
        .vocab
        .iter()
        .zip(&g.token_types)
        .filter(|(_, ty)| **ty == CONTROL)
        .map(|(t, _)| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(control).map_err(tok_err)?;
    let added: Vec<AddedToken> = idefics3_added_tokens(padded_vocab, g.vocab.len())
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(added).map_err(tok_err)?;
    let n = tok.get_vocab_size(true);
    if n != padded_vocab {
        return Err(Error::Tokenizer(format!(
            "built tokenizer has {n} tokens, expected {padded_vocab}"
        )));
    }
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_token_lands_on_smolvlm_256m_id() {
        let t = idefics3_added_tokens(49280, 49152);
        assert_eq!(t.len(), 128);
        assert_eq!(
            49152 + t.iter().position(|s| s == "<image>").unwrap_or(0),
            49190
        );
        assert_eq!(t.last().map(String::as_str), Some("<end_of_utterance>"));
    }
}
