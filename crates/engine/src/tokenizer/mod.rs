//! Tokenizers: text ⇄ token ids, from a Hugging Face `tokenizer.json` or from GGUF metadata.
//!
//! - [`hf`]: `tokenizer.json` through the `tokenizers` crate (pure-Rust regex backend);
//! - [`gguf`]: our own implementation of the two GGUF tokenizer models, byte-level BPE
//!   ([`bpe`], with the regex pre-tokenizers of [`pretokenize`]) and SentencePiece BPE ([`spm`]);
//! - [`stream`]: [`DecodeStream`], incremental detokenization that never emits broken UTF-8.
//!
//! [`Tokenizer`] puts both behind one type. Special tokens written in the text (`<|im_start|>`,
//! `<｜User｜>`) are recognised as single tokens by `encode`.

pub mod bpe;
pub mod gguf;
pub mod hf;
pub mod pretokenize;
pub mod spm;
pub mod stream;

use std::path::{Path, PathBuf};

pub use gguf::{GgufTokenizer, GgufVocab, TokenType};
pub use hf::HfTokenizer;
pub use stream::DecodeStream;

/// Errors of loading or running a tokenizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A GGUF file could not be opened.
    #[error("cannot read GGUF file {path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// The reader's error.
        message: String,
    },
    /// A `tokenizer.json` (or `tokenizer_config.json`) could not be parsed.
    #[error("cannot load Hugging Face tokenizer {path}: {message}")]
    HfLoad {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The `tokenizers` crate failed while encoding or decoding.
    #[error("tokenizers library error: {message}")]
    Hf {
        /// Its message.
        message: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not know.
    #[error("unknown GGUF pre-tokenizer `{name}` (tokenizer.ggml.pre); known: {known}")]
    UnknownPreTokenizer {
        /// The name in the file.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// `tokenizer.ggml.model` is not one this crate implements.
    #[error(
        "unsupported GGUF tokenizer model `{model}` (tokenizer.ggml.model); supported: gpt2, llama"
    )]
    UnsupportedModel {
        /// The model in the file.
        model: String,
    },
    /// A required GGUF metadata key is missing.
    #[error("GGUF tokenizer metadata key {key} is missing")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A GGUF metadata key has an unusable value.
    #[error("GGUF tokenizer metadata key {key} {problem}")]
    BadKey {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A pre-tokenizer regex does not compile.
    #[error("pre-tokenizer regex {pattern:?} does not compile: {message}")]
    BadRegex {
        /// The regex.
        pattern: String,
        /// The compiler's message.
        message: String,
    },
    /// A pre-tokenizer regex failed while matching (backtracking limit).
    #[error("pre-tokenizer regex failed on the input: {message}")]
    RegexRun {
        /// The matcher's message.
        message: String,
    },
    /// A `tokenizer.ggml.merges` entry is not `"left right"`.
    #[error("tokenizer.ggml.merges entry #{index} {merge:?} is not of the form \"left right\"")]
    BadMerge {
        /// Index in the merge list.
        index: usize,
        /// The entry.
        merge: String,
    },
    /// A token id outside the vocabulary was given to decode.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// `add_bos_token`/`add_eos_token` is set but the vocabulary names no such token.
    #[error(
        "tokenizer.ggml.add_{which}_token is set but tokenizer.ggml.{which}_token_id is missing"
    )]
    MissingSpecial {
        /// `bos` or `eos`.
        which: &'static str,
    },
}

/// A tokenizer of either origin.
#[derive(Debug)]
#[non_exhaustive]
pub enum Tokenizer {
    /// From `tokenizer.json`.
    Hf(Box<HfTokenizer>),
    /// From GGUF metadata.
    Gguf(Box<GgufTokenizer>),
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json` (BOS/EOS from `tokenizer_config.json` beside it).
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        Ok(Self::Hf(Box::new(HfTokenizer::from_file(path.as_ref())?)))
    }

    /// Reads the tokenizer of a GGUF file (its `tokenizer.ggml.*` metadata).
    pub fn from_gguf_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let file =
            frugal_formats::gguf::GgufFile::open(path).map_err(|e| TokenizerError::Gguf {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Self::from_gguf_metadata(file.metadata())
    }

    /// Builds a tokenizer from GGUF metadata.
    pub fn from_gguf_metadata(md: &frugal_formats::gguf::Metadata) -> Result<Self, TokenizerError> {
        Self::from_gguf_vocab(GgufVocab::from_metadata(md)?)
    }

    /// Builds a tokenizer from GGUF tokenizer fields.
    pub fn from_gguf_vocab(vocab: GgufVocab) -> Result<Self, TokenizerError> {
        Ok(Self::Gguf(Box::new(GgufTokenizer::new(vocab)?)))
    }

    /// Text → ids. Special tokens written in the text become single ids; with
    /// `add_special_tokens`, BOS/EOS are added as the tokenizer's configuration asks.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Self::Hf(t) => t.encode(text, add_special_tokens),
            Self::Gguf(t) => t.encode(text, add_special_tokens),
        }
    }

    /// Like [`Self::encode`], but control/special tokens written in the text are read as plain
    /// text (user-defined / non-special added tokens are still matched). Use it for untrusted
    /// text, e.g. user messages, so they cannot forge chat markers; llama.cpp's test harness
    /// (`parse_special = false`) tokenizes this way.
    pub fn encode_plain(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Self::Hf(t) => t.encode_plain(text, add_special_tokens),
            Self::Gguf(t) => t.encode_plain(text, add_special_tokens),
        }
    }

    /// Ids → text; with `skip_special_tokens`, special tokens (BOS, EOS, control) are left out.
    /// Bytes that do not form UTF-8 come out as U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        match self {
            Self::Hf(t) => t.decode(ids, skip_special_tokens),
            Self::Gguf(_) => {
                let mut bytes = Vec::new();
                for &id in ids {
                    bytes.extend_from_slice(&self.piece_bytes(id, skip_special_tokens)?);
                }
                let start =
                    usize::from(self.strips_leading_space() && bytes.first() == Some(&b' '));
                Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
            }
        }
    }

    /// The raw bytes token `id` stands for (a special token: its text); `None` if out of range.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match self {
            Self::Hf(t) => t.token_bytes(id),
            Self::Gguf(t) => t.token_bytes(id),
        }
    }

    /// [`Self::token_bytes`] for decoding: empty for a skipped special token, an error for an id
    /// out of range.
    fn piece_bytes(&self, id: u32, skip_special_tokens: bool) -> Result<Vec<u8>, TokenizerError> {
        if skip_special_tokens && self.is_special(id) {
            return Ok(Vec::new());
        }
        self.token_bytes(id).ok_or(TokenizerError::IdOutOfRange {
            id,
            vocab_size: self.vocab_size(),
        })
    }

    /// Whether decoding drops one leading space (SentencePiece's space prefix).
    fn strips_leading_space(&self) -> bool {
        match self {
            Self::Hf(t) => t.strips_leading_space(),
            Self::Gguf(t) => t.strips_leading_space(),
        }
    }

    /// A streaming decoder over this tokenizer.
    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special_tokens)
    }

    /// Number of ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Hf(t) => t.vocab_size(),
            Self::Gguf(t) => t.vocab_size(),
        }
    }

    /// Beginning-of-sequence id, when known.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Self::Hf(t) => t.bos_id(),
            Self::Gguf(t) => t.bos_id(),
        }
    }

    /// End-of-sequence id, when known.
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            Self::Hf(t) => t.eos_id(),
            Self::Gguf(t) => t.eos_id(),
        }
    }

    /// Id of the token whose vocabulary text is `s`.
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        match self {
            Self::Hf(t) => t.token_to_id(s),
            Self::Gguf(t) => t.token_to_id(s),
        }
    }

    /// Vocabulary text of token `id` (byte-level BPE: in its byte-character spelling).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Self::Hf(t) => t.id_to_token(id),
            Self::Gguf(t) => t.id_to_token(id).map(str::to_string),
        }
    }

    /// Whether `id` is a special token (skipped by `skip_special_tokens`).
    pub fn is_special(&self, id: u32) -> bool {
        match self {
            Self::Hf(t) => t.is_special(id),
            Self::Gguf(t) => t.is_special(id),
        }
    }
}
