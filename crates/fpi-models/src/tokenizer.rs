//! SD1.5's CLIP tokenizer: byte-level BPE with `</w>` word ends, lower-cased, padded to 77 tokens.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as Normalizers};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// The words CLIP's BPE sees: contractions, runs of letters, single digits, runs of other symbols.
const CLIP_WORDS: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";

/// A prompt as token ids, and whether it had to be cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `max_len` ids: start, the prompt's tokens, end, then end again as padding.
    pub ids: Vec<u32>,
    /// How many of the prompt's tokens were dropped to fit (0 when it fit).
    pub dropped: usize,
}

/// CLIP's tokenizer with SD1.5's framing of a prompt.
pub struct ClipTokenizer {
    inner: Tokenizer,
    start: u32,
    end: u32,
    max_len: usize,
}

impl ClipTokenizer {
    /// Reads the bytes of a `tokenizer.json` written by the `tokenizers` library (`path` names it in messages).
    pub fn from_tokenizer_json(bytes: &[u8], path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error(path, e))?;
        Self::new(inner, path)
    }

    /// Builds CLIP's tokenizer from the texts of its vocabulary (`vocab.json`) and merge list (`merges.txt`), the
    /// files of SD1.5's `tokenizer/` folder, read from `paths` (vocabulary, merges).
    pub fn from_vocab_merges(vocab: &str, merges: &str, paths: &[std::path::PathBuf; 2]) -> Result<Self> {
        let [vocab_path, merges_path] = paths;
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab).map_err(|e| tokenizer_error(vocab_path, e))?;
        let pairs = merge_pairs(merges, merges_path)?;
        // The merges must be pairs of tokens in the vocabulary, so the builder's errors are the merge list's.
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), pairs)
            .unk_token(END.into())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(|e| tokenizer_error(merges_path, e))?;
        let mut inner = Tokenizer::new(bpe);
        let whitespace = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ").expect("a valid regex");
        inner.with_normalizer(Some(Normalizers::new(vec![NFC.into(), whitespace.into(), Lowercase.into()])));
        let words = Split::new(SplitPattern::Regex(CLIP_WORDS.into()), SplitDelimiterBehavior::Removed, true)
            .expect("a valid regex");
        inner
            .with_pre_tokenizer(Some(PreTokenizers::new(vec![words.into(), ByteLevel::new(false, true, true).into()])));
        Self::new(inner, vocab_path)
    }

    fn new(mut inner: Tokenizer, path: &Path) -> Result<Self> {
        inner.with_truncation(None).map_err(|e| tokenizer_error(path, e))?;
        inner.with_padding(None);
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| Error::Tokenizer {
                path: path.to_owned(),
                message: format!("the vocabulary has no {token}"),
            })
        };
        Ok(Self { start: id(START)?, end: id(END)?, inner, max_len: 77 })
    }

    /// The prompt's tokens alone: no start or end token, no padding, not cut to fit.
    pub fn words(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(prompt, false).map_err(|e| Error::Tokenize { message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The start and end tokens that frame a prompt.
    pub fn framing(&self) -> (u32, u32) {
        (self.start, self.end)
    }

    /// How many tokens a prompt may have: 77 less the start and end tokens.
    pub fn room(&self) -> usize {
        self.max_len - 2
    }

    /// Tokenizes a prompt into exactly 77 ids, as diffusers' SD1.5 pipeline does (truncating long prompts).
    pub fn encode(&self, prompt: &str) -> Result<Tokens> {
        let words = self.words(prompt)?;
        let room = self.room();
        let kept = &words[..words.len().min(room)];
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.start);
        ids.extend_from_slice(kept);
        ids.resize(self.max_len, self.end);
        Ok(Tokens { ids, dropped: words.len() - kept.len() })
    }
}

/// The token pairs of `merges.txt` (read from `path`), without its `#version` line and empty lines.
fn merge_pairs(merges: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let lines = merges.lines().enumerate().filter(|(_, l)| !l.starts_with("#version") && !l.is_empty());
    lines
        .map(|(line, text)| match text.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok((a.to_owned(), b.to_owned())),
            _ => Err(tokenizer_error(path, format!("line {} is not a pair of tokens: {text:?}", line + 1))),
        })
        .collect()
}

fn tokenizer_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer { path: path.to_owned(), message: e.to_string() }
}
