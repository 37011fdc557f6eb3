//! Tokenizers described by GGUF metadata (`tokenizer.ggml.*`), implemented here.
//!
//! Keys read (GGUF spec, "Tokenizer" section; llama.cpp is the reference reader):
//! - `tokenizer.ggml.model`: `gpt2` (byte-level BPE, see [`super::bpe`]) or `llama`
//!   (SentencePiece BPE, see [`super::spm`]);
//! - `tokenizer.ggml.pre`: the pre-tokenizer regex set for `gpt2` (see [`super::pretokenize`]);
//! - `tokenizer.ggml.tokens` (strings), `tokenizer.ggml.scores` (f32, `llama`),
//!   `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
//!   6 byte), `tokenizer.ggml.merges` (`"left right"`, rank = index; `gpt2`);
//! - `tokenizer.ggml.{bos,eos,unknown,padding}_token_id`, `tokenizer.ggml.add_{bos,eos}_token`,
//!   `tokenizer.ggml.add_space_prefix`.
//!
//! Control, user-defined and unknown tokens are cut out of the text before the model runs
//! (leftmost, longest match first), so chat markers such as `<|im_start|>` become one id each.
//! For `llama`, each text fragment that starts the input or follows such a token gets a leading
//! space (`add_space_prefix`), spaces become `▁`, and decoding drops the one leading space again.

use std::collections::HashMap;

use frugal_formats::gguf::Metadata;

use super::bpe::BpeModel;
use super::pretokenize::PreTokenizer;
use super::{spm, TokenizerError};

/// The kind of a vocabulary entry (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenType {
    /// 1: an ordinary token.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token (BOS, EOS, chat markers).
    Control,
    /// 4: a user-defined (added) token, matched verbatim in text.
    UserDefined,
    /// 5: an unused slot.
    Unused,
    /// 6: a byte-fallback token `<0xNN>`.
    Byte,
}

impl TokenType {
    /// From the GGUF integer; unknown values count as normal tokens (as llama.cpp's
    /// "undefined" attribute behaves).
    pub fn from_gguf(v: i64) -> Self {
        match v {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Normal,
        }
    }
}

/// The tokenizer fields of a GGUF file, as plain data.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`; `None` means `default`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (may be empty for `gpt2`).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.token_type` (may be empty: all normal).
    pub token_types: Vec<i64>,
    /// `tokenizer.ggml.merges`.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; `None`: the model's default.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; `None`: false.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`; `None`: true for `llama`, false for `gpt2`.
    pub add_space_prefix: Option<bool>,
}

impl GgufVocab {
    /// Reads the `tokenizer.ggml.*` keys. Missing required keys (`model`, `tokens`, and
    /// `merges` for `gpt2`) and values of the wrong type are errors naming the key.
    pub fn from_metadata(md: &Metadata) -> Result<Self, TokenizerError> {
        fn wrong(key: &'static str, want: &str) -> TokenizerError {
            TokenizerError::BadKey {
                key,
                problem: format!("is not {want}"),
            }
        }
        fn opt<T>(
            md: &Metadata,
            key: &'static str,
            want: &str,
            v: Option<T>,
        ) -> Result<Option<T>, TokenizerError> {
            match (md.contains_key(key), v) {
                (false, _) => Ok(None),
                (true, Some(v)) => Ok(Some(v)),
                (true, None) => Err(wrong(key, want)),
            }
        }
        fn id(md: &Metadata, key: &'static str) -> Result<Option<u32>, TokenizerError> {
            let v = opt(md, key, "a non-negative integer", md.get_u64(key))?;
            v.map(|x| u32::try_from(x).map_err(|_| wrong(key, "a 32-bit token id")))
                .transpose()
        }
        const MODEL: &str = "tokenizer.ggml.model";
        const TOKENS: &str = "tokenizer.ggml.tokens";
        const MERGES: &str = "tokenizer.ggml.merges";
        let model = opt(md, MODEL, "a string", md.get_str(MODEL))?
            .ok_or(TokenizerError::MissingKey { key: MODEL })?
            .to_string();
        let tokens: Vec<String> = opt(md, TOKENS, "an array of strings", md.get_str_array(TOKENS))?
            .ok_or(TokenizerError::MissingKey { key: TOKENS })?
            .into_iter()
            .map(str::to_string)
            .collect();
        let merges: Vec<String> = opt(md, MERGES, "an array of strings", md.get_str_array(MERGES))?
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        if model == "gpt2" && merges.is_empty() {
            return Err(TokenizerError::MissingKey { key: MERGES });
        }
        let pre = opt(
            md,
            "tokenizer.ggml.pre",
            "a string",
            md.get_str("tokenizer.ggml.pre"),
        )?
        .map(str::to_string);
        let scores = opt(
            md,
            "tokenizer.ggml.scores",
            "an array of numbers",
            md.get_f32_array("tokenizer.ggml.scores"),
        )?
        .unwrap_or_default();
        let token_types = opt(
            md,
            "tokenizer.ggml.token_type",
            "an array of integers",
            md.get_i64_array("tokenizer.ggml.token_type"),
        )?
        .unwrap_or_default();
        let flag = |key: &'static str| opt(md, key, "a bool", md.get_bool(key));
        Ok(Self {
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
            bos_id: id(md, "tokenizer.ggml.bos_token_id")?,
            eos_id: id(md, "tokenizer.ggml.eos_token_id")?,
            unk_id: id(md, "tokenizer.ggml.unknown_token_id")?,
            pad_id: id(md, "tokenizer.ggml.padding_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token")?,
            add_eos: flag("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
        })
    }
}

/// The algorithm behind a [`GgufTokenizer`].
#[derive(Debug)]
enum Model {
    Bpe {
        bpe: Box<BpeModel>,
        pre: PreTokenizer,
    },
    Spm {
        byte_token: Box<[Option<u32>; 256]>,
        add_space_prefix: bool,
    },
}

/// A tokenizer built from [`GgufVocab`].
#[derive(Debug)]
pub struct GgufTokenizer {
    model: Model,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    scores: Vec<f32>,
    token_to_id: HashMap<String, u32>,
    /// Tokens cut out of text before the model runs, grouped by first byte, longest first.
    specials: HashMap<u8, Vec<(String, u32)>>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// A piece of input text after special tokens are cut out.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl GgufTokenizer {
    /// Builds the tokenizer, checking the vocabulary's consistency.
    pub fn new(v: GgufVocab) -> Result<Self, TokenizerError> {
        let n = v.tokens.len();
        if n == 0 {
            return Err(TokenizerError::BadKey {
                key: "tokenizer.ggml.tokens",
                problem: "is empty".into(),
            });
        }
        let n_u32 = u32::try_from(n).map_err(|_| TokenizerError::BadKey {
            key: "tokenizer.ggml.tokens",
            problem: format!("has {n} entries, more than u32 ids can address"),
        })?;
        if !v.token_types.is_empty() && v.token_types.len() != n {
            return Err(TokenizerError::BadKey {
                key: "tokenizer.ggml.token_type",
                problem: format!("has {} entries for {n} tokens", v.token_types.len()),
            });
        }
        if !v.scores.is_empty() && v.scores.len() != n {
            return Err(TokenizerError::BadKey {
                key: "tokenizer.ggml.scores",
                problem: format!("has {} entries for {n} tokens", v.scores.len()),
            });
        }
        let check_id =
            |key: &'static str, id: Option<u32>| -> Result<Option<u32>, TokenizerError> {
                match id {
                    Some(i) if i >= n_u32 => Err(TokenizerError::BadKey {
                        key,
                        problem: format!("id {i} is outside the vocabulary of {n} tokens"),
                    }),
                    other => Ok(other),
                }
            };
        let bos = check_id("tokenizer.ggml.bos_token_id", v.bos_id)?;
        let eos = check_id("tokenizer.ggml.eos_token_id", v.eos_id)?;
        let unk = check_id("tokenizer.ggml.unknown_token_id", v.unk_id)?;
        let pad = check_id("tokenizer.ggml.padding_token_id", v.pad_id)?;
        let types: Vec<TokenType> = if v.token_types.is_empty() {
            vec![TokenType::Normal; n]
        } else {
            v.token_types
                .iter()
                .map(|&t| TokenType::from_gguf(t))
                .collect()
        };
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in v.tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp's map; ids stay < n, checked above.
            token_to_id.insert(t.clone(), i as u32);
        }
        let mut specials: HashMap<u8, Vec<(String, u32)>> = HashMap::new();
        for (i, t) in v.tokens.iter().enumerate() {
            let cut = matches!(
                types[i],
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown
            );
            if cut && !t.is_empty() {
                specials
                    .entry(t.as_bytes()[0])
                    .or_default()
                    .push((t.clone(), i as u32));
            }
        }
        for list in specials.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        let (model, default_add_bos) = match v.model.as_str() {
            "gpt2" => {
                let pre_name = v.pre.as_deref().unwrap_or("default");
                let pre = PreTokenizer::from_name(pre_name)?;
                // Llama 3's tokenizer.json sets `ignore_merges`; GGUF does not store it, so the
                // pre-tokenizer name implies it, as in llama.cpp.
                let llama3 = matches!(pre_name, "llama3" | "llama-v3" | "llama-bpe" | "falcon3");
                let (bpe, dropped) = BpeModel::new(&token_to_id, &v.merges, llama3)?;
                if dropped > 0 {
                    tracing::debug!(
                        dropped,
                        "GGUF merges whose parts are not tokens were ignored"
                    );
                }
                (
                    Model::Bpe {
                        bpe: Box::new(bpe),
                        pre,
                    },
                    llama3,
                )
            }
            "llama" => {
                let mut byte_token = Box::new([None; 256]);
                for (b, slot) in byte_token.iter_mut().enumerate() {
                    *slot = token_to_id.get(&format!("<0x{b:02X}>")).copied();
                }
                let add_space_prefix = v.add_space_prefix.unwrap_or(true);
                (
                    Model::Spm {
                        byte_token,
                        add_space_prefix,
                    },
                    true,
                )
            }
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    model: other.to_string(),
                })
            }
        };
        let add_bos = v.add_bos.unwrap_or(default_add_bos);
        let add_eos = v.add_eos.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecial { which: "bos" });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecial { which: "eos" });
        }
        let scores = if v.scores.is_empty() {
            vec![0.0; n]
        } else {
            v.scores
        };
        Ok(Self {
            model,
            tokens: v.tokens,
            types,
            scores,
            token_to_id,
            specials,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            add_eos,
        })
    }

    /// Cuts special tokens out of `text`: at each position the longest special token that
    /// starts there wins; the text between them is left for the model.
    fn fragments<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut last = 0;
        let mut i = 0;
        while i < bytes.len() {
            let hit = self.specials.get(&bytes[i]).and_then(|list| {
                list.iter()
                    .filter(|(_, id)| parse_special || !self.is_special(*id))
                    .find(|(s, _)| bytes[i..].starts_with(s.as_bytes()))
                    .map(|(s, id)| (s.len(), *id))
            });
            match hit {
                Some((len, id)) => {
                    if i > last {
                        out.push(Fragment::Text(&text[last..i]));
                    }
                    out.push(Fragment::Token(id));
                    i += len;
                    last = i;
                }
                None => i += 1,
            }
        }
        if last < bytes.len() {
            out.push(Fragment::Text(&text[last..]));
        }
        out
    }

    /// Encodes `text`; special tokens written in it become single ids, and with
    /// `add_special_tokens` BOS/EOS are added as the vocabulary asks.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, add_special_tokens, true)
    }

    /// Like [`Self::encode`], but control and unknown tokens written in the text stay text
    /// (user-defined tokens are still matched): for untrusted input, and llama.cpp's
    /// `parse_special = false`.
    pub fn encode_plain(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, add_special_tokens, false)
    }

    fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        if add_special_tokens && self.add_bos {
            // OK because `new` refused add_bos without a bos id.
            out.push(self.bos.expect("OK because add_bos implies a bos id"));
        }
        let frags = if text.is_empty() {
            Vec::new()
        } else {
            self.fragments(text, parse_special)
        };
        match &self.model {
            Model::Bpe { bpe, pre } => {
                for f in frags {
                    match f {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            for piece in pre.split(t)? {
                                bpe.encode_piece(piece, &self.token_to_id, self.unk, &mut out);
                            }
                        }
                    }
                }
            }
            Model::Spm {
                byte_token,
                add_space_prefix,
            } => {
                let mut after_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(t) => {
                            buf.clear();
                            if *add_space_prefix && after_special {
                                buf.push('▁');
                            }
                            for c in t.chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::encode(
                                &buf,
                                &self.token_to_id,
                                &self.scores,
                                byte_token,
                                self.unk,
                                &mut out,
                            );
                            after_special = false;
                        }
                    }
                }
            }
        }
        if add_special_tokens && self.add_eos {
            // OK because `new` refused add_eos without an eos id.
            out.push(self.eos.expect("OK because add_eos implies an eos id"));
        }
        Ok(out)
    }

    /// The bytes token `id` contributes to decoded text (special tokens: their text), or
    /// `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let text = self.tokens.get(id as usize)?;
        let ty = self.types[id as usize];
        let mut out = Vec::with_capacity(text.len());
        match (&self.model, ty) {
            (
                _,
                TokenType::Control
                | TokenType::UserDefined
                | TokenType::Unknown
                | TokenType::Unused,
            ) => out.extend_from_slice(text.as_bytes()),
            (Model::Bpe { bpe, .. }, _) => bpe.byte_level().decode_into(text, &mut out),
            (Model::Spm { .. }, TokenType::Byte) => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            (Model::Spm { .. }, _) => out.extend_from_slice(text.replace('▁', " ").as_bytes()),
        }
        Some(out)
    }

    /// Whether decoding drops one leading space of the output (SentencePiece's space prefix).
    pub fn strips_leading_space(&self) -> bool {
        matches!(
            self.model,
            Model::Spm {
                add_space_prefix: true,
                ..
            }
        )
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    /// BOS id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    /// EOS id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    /// Unknown-token id.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }
    /// Padding id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    /// Id of the token whose (vocabulary) text is `s`.
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.token_to_id.get(s).copied()
    }
    /// Vocabulary text of token `id`.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
    /// Type of token `id`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }
    /// Whether `id` is a control or unknown token (skipped by `skip_special_tokens`).
    pub fn is_special(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(TokenType::Control | TokenType::Unknown)
        )
    }
}

/// `<0xNN>` → byte `NN`.
fn parse_byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
