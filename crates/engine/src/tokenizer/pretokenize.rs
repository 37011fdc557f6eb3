//! Regex pre-tokenizers for byte-level BPE vocabularies read from GGUF.
//!
//! A GGUF file names its pre-tokenizer with the string `tokenizer.ggml.pre`; the regexes behind
//! each name are the ones of the model's Hugging Face `tokenizer.json` (`pre_tokenizer`: one or
//! more `Split` steps with behaviour `Isolated`, or `ByteLevel` with `use_regex`), which is also
//! the list llama.cpp keeps per name. Each regex of a list is applied in turn to every piece the
//! previous one produced; a piece is cut into the regex's matches *and* the text between them
//! (HF's `Isolated`), so no text is ever dropped. Lookarounds (`\s+(?!\S)`) see only the piece
//! they run on, never the neighbouring pieces, as in HF.
//!
//! The regexes are matched with `fancy-regex` (backtracking where lookarounds demand it).

use fancy_regex::Regex;

use super::TokenizerError;

/// GPT-2's pattern (HF `ByteLevel(use_regex=true)`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's pattern: case-insensitive contractions, digits in runs of at most three.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's pattern: Llama 3's with single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM (V1/V2 family) letters: an explicit list of Latin, Greek, Cyrillic, ... ranges.
const DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+";

/// DeepSeek V3 / R1 main pattern (third split step of its `tokenizer.json`).
const DEEPSEEK_V3_MAIN: &str = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

/// `tokenizer.ggml.pre` names this module knows, with the regex list each one applies.
///
/// Several names share a list (they are different models' names for the same pre-tokenizer).
const KNOWN: &[(&[&str], &[&str])] = &[
    (&["gpt-2", "phi-2", "mpt", "olmo", "jais", "gpt2"], &[GPT2]),
    (
        &["default"],
        // llama.cpp's fallback list for BPE vocabularies that name no known pre-tokenizer.
        &[
            r"[\p{P}\$\+<=>\^~\|]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ],
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "dbrx",
            "smaug-bpe",
            "chatglm-bpe",
            "glm4",
        ],
        &[LLAMA3],
    ),
    (
        &["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"],
        &[QWEN2],
    ),
    (
        &["deepseek-llm"],
        &[
            "[\r\n]",
            DEEPSEEK_LLM_LETTERS,
            "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            "\\p{N}+",
        ],
    ),
    (
        &["deepseek-coder"],
        &[
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
            "\\p{N}",
        ],
    ),
    (
        &["deepseek-v3"],
        &[
            "\\p{N}{1,3}",
            "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
            DEEPSEEK_V3_MAIN,
        ],
    ),
    (
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        &[
            r"\p{N}",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        ],
    ),
    (
        &["falcon"],
        &[
            r"[\p{P}\$\+<=>\^~\|`]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            r"[0-9][0-9][0-9]",
        ],
    ),
];

/// Every `tokenizer.ggml.pre` name [`PreTokenizer::from_name`] accepts.
pub fn known_names() -> Vec<&'static str> {
    KNOWN
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect()
}

/// A compiled list of split regexes.
#[derive(Debug)]
pub struct PreTokenizer {
    name: String,
    regexes: Vec<Regex>,
}

impl PreTokenizer {
    /// The pre-tokenizer GGUF calls `name` (`tokenizer.ggml.pre`).
    pub fn from_name(name: &str) -> Result<Self, TokenizerError> {
        let (_, patterns) = KNOWN
            .iter()
            .find(|(names, _)| names.contains(&name))
            .ok_or_else(|| TokenizerError::UnknownPreTokenizer {
                name: name.to_string(),
                known: known_names().join(", "),
            })?;
        Self::from_patterns(name, patterns)
    }

    /// A pre-tokenizer from explicit regexes, applied in order.
    pub fn from_patterns(name: &str, patterns: &[&str]) -> Result<Self, TokenizerError> {
        let regexes = patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| TokenizerError::BadRegex {
                    pattern: (*p).to_string(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_string(),
            regexes,
        })
    }

    /// The name this pre-tokenizer was built for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts `text` into pieces (byte ranges of `text`, in order, covering all of it).
    pub fn split<'t>(&self, text: &'t str) -> Result<Vec<&'t str>, TokenizerError> {
        let mut pieces: Vec<&'t str> = if text.is_empty() {
            Vec::new()
        } else {
            vec![text]
        };
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                split_isolated(re, piece, &mut next)?;
            }
            pieces = next;
        }
        Ok(pieces)
    }
}

/// HF `Split(behavior = Isolated)`: matches become pieces, and so does the text between them.
fn split_isolated<'t>(
    re: &Regex,
    piece: &'t str,
    out: &mut Vec<&'t str>,
) -> Result<(), TokenizerError> {
    let mut last = 0;
    for m in re.find_iter(piece) {
        let m = m.map_err(|e| TokenizerError::RegexRun {
            message: e.to_string(),
        })?;
        if m.start() == m.end() {
            // An empty match cuts nothing (HF skips them too).
            continue;
        }
        if m.start() > last {
            out.push(&piece[last..m.start()]);
        }
        out.push(m.as_str());
        last = m.end();
    }
    if last < piece.len() {
        out.push(&piece[last..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_list_compiles() {
        for name in known_names() {
            PreTokenizer::from_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn gpt2_splits_words_and_keeps_spaces() {
        let p = PreTokenizer::from_name("gpt-2").expect("OK because gpt-2 is known");
        assert_eq!(
            p.split("Hello world  !").expect("OK"),
            vec!["Hello", " world", " ", " !"]
        );
        assert_eq!(p.split("").expect("OK"), Vec::<&str>::new());
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let e = PreTokenizer::from_name("nope").expect_err("OK because nope is unknown");
        let msg = e.to_string();
        assert!(msg.contains("nope") && msg.contains("deepseek-v3"), "{msg}");
    }
}
