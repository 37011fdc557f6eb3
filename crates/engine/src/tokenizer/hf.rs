//! Tokenizers from a Hugging Face `tokenizer.json`, run by the `tokenizers` crate.
//!
//! The crate does encoding (normalizer, added-token matching, pre-tokenizer, model,
//! post-processor) and `decode`. BOS/EOS are not part of `tokenizer.json`: they come from the
//! `bos_token`/`eos_token` entries of a sibling `tokenizer_config.json` when there is one.
//! For streaming, [`HfTokenizer::token_bytes`] mirrors the file's decoder per token:
//! `ByteLevel` (GPT-2 byte table, a token with any character outside the table passes as its own
//! UTF-8), the SentencePiece chain `Replace(▁→' ')` + `ByteFallback` (+ `Strip`), or `Metaspace`.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;

use super::bpe::ByteLevel;
use super::TokenizerError;

/// How single tokens turn into bytes, read from the `decoder` of `tokenizer.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceMode {
    /// GPT-2 byte-level text.
    ByteLevel,
    /// SentencePiece text: `▁` is a space, `<0xNN>` a byte.
    SentencePiece,
    /// Token text as is.
    Raw,
}

/// A `tokenizer.json` tokenizer.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    mode: PieceMode,
    strip_leading_space: bool,
    bytes: ByteLevel,
    special: HashSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    /// `add_bos_token` / `add_eos_token` of `tokenizer_config.json` (transformers' Llama-style
    /// tokenizers add these on load, on top of the file's post-processor).
    add_bos: bool,
    add_eos: bool,
    /// A copy of `inner` that reads special tokens in the text as text, made on first use.
    plain: std::sync::OnceLock<tokenizers::Tokenizer>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("mode", &self.mode)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn hf_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Hf {
        message: e.to_string(),
    }
}

/// A special-token entry of `tokenizer_config.json`: a string or `{"content": ...}`.
fn config_token(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// Reads the piece mode and the leading-space strip from the `decoder` JSON.
fn decoder_mode(decoder: &Value) -> (PieceMode, bool) {
    let ty = decoder.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "ByteLevel" => (PieceMode::ByteLevel, false),
        "Metaspace" => {
            let never = decoder.get("prepend_scheme").and_then(Value::as_str) == Some("never")
                || decoder.get("add_prefix_space").and_then(Value::as_bool) == Some(false);
            (PieceMode::SentencePiece, !never)
        }
        "Sequence" => {
            let parts = decoder
                .get("decoders")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut mode = PieceMode::Raw;
            let mut strip = false;
            for d in &parts {
                match d.get("type").and_then(Value::as_str).unwrap_or("") {
                    "ByteLevel" => mode = PieceMode::ByteLevel,
                    "Replace" | "ByteFallback" | "Metaspace" => mode = PieceMode::SentencePiece,
                    "Strip" => {
                        strip = d.get("start").and_then(Value::as_u64).unwrap_or(0) >= 1
                            && d.get("content").and_then(Value::as_str) == Some(" ")
                    }
                    _ => {}
                }
            }
            (mode, strip)
        }
        _ => (PieceMode::Raw, false),
    }
}

impl HfTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` beside it, if present).
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| TokenizerError::HfLoad {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let inner = tokenizers::Tokenizer::from_str(&text).map_err(|e| TokenizerError::HfLoad {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let (mode, strip_leading_space) = decoder_mode(json.get("decoder").unwrap_or(&Value::Null));
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        let (mut bos, mut eos, mut add_bos, mut add_eos) = (None, None, false, false);
        if let Some(dir) = path.parent() {
            let cfg_path = dir.join("tokenizer_config.json");
            if cfg_path.is_file() {
                let cfg_text =
                    std::fs::read_to_string(&cfg_path).map_err(|source| TokenizerError::Io {
                        path: cfg_path.clone(),
                        source,
                    })?;
                let cfg: Value =
                    serde_json::from_str(&cfg_text).map_err(|e| TokenizerError::HfLoad {
                        path: cfg_path.clone(),
                        message: e.to_string(),
                    })?;
                bos = config_token(cfg.get("bos_token")).and_then(|s| inner.token_to_id(s));
                eos = config_token(cfg.get("eos_token")).and_then(|s| inner.token_to_id(s));
                add_bos = cfg.get("add_bos_token").and_then(Value::as_bool) == Some(true);
                add_eos = cfg.get("add_eos_token").and_then(Value::as_bool) == Some(true);
            }
        }
        Ok(Self {
            inner,
            mode,
            strip_leading_space,
            bytes: ByteLevel::new(),
            special,
            bos,
            eos,
            add_bos,
            add_eos,
            plain: std::sync::OnceLock::new(),
        })
    }

    /// Encodes with the `tokenizers` crate. With `add_special_tokens`, BOS/EOS are also added
    /// when `tokenizer_config.json` asks for them and the post-processor did not already.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(&self.inner, text, add_special_tokens)
    }

    /// Like [`Self::encode`], but added tokens marked `special` written in the text stay text
    /// (the crate's `encode_special_tokens`); non-special added tokens are still matched.
    pub fn encode_plain(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let plain = self.plain.get_or_init(|| {
            let mut t = self.inner.clone();
            t.set_encode_special_tokens(true);
            t
        });
        self.encode_with(plain, text, add_special_tokens)
    }

    fn encode_with(
        &self,
        tok: &tokenizers::Tokenizer,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let enc = tok.encode(text, add_special_tokens).map_err(hf_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens {
            if let (true, Some(bos)) = (self.add_bos, self.bos) {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
            if let (true, Some(eos)) = (self.add_eos, self.eos) {
                if ids.last() != Some(&eos) {
                    ids.push(eos);
                }
            }
        }
        Ok(ids)
    }

    /// Decodes with the `tokenizers` crate.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        let n = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= n) {
            return Err(TokenizerError::IdOutOfRange { id, vocab_size: n });
        }
        self.inner.decode(ids, skip_special_tokens).map_err(hf_err)
    }

    /// The bytes one token contributes, following the file's decoder.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let text = self.inner.id_to_token(id)?;
        let mut out = Vec::with_capacity(text.len());
        match self.mode {
            PieceMode::ByteLevel => {
                // HF's ByteLevel decoder maps a token only if every character is in the table.
                if text.chars().all(|c| self.bytes.byte_of(c).is_some()) {
                    self.bytes.decode_into(&text, &mut out);
                } else {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            PieceMode::SentencePiece => match byte_fallback(&text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.replace('▁', " ").as_bytes()),
            },
            PieceMode::Raw => out.extend_from_slice(text.as_bytes()),
        }
        Some(out)
    }

    /// Whether decoding drops one leading space.
    pub fn strips_leading_space(&self) -> bool {
        self.strip_leading_space
    }
    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    /// BOS id (from `tokenizer_config.json`).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    /// EOS id (from `tokenizer_config.json`).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    /// Id of token text `s` (model vocabulary or added token).
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }
    /// Text of token `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    /// Whether `id` is an added token marked `special`.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }
}

/// `<0xNN>` → byte `NN`.
fn byte_fallback(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
