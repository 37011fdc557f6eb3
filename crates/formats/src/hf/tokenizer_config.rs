//! `tokenizer_config.json`: special tokens, BOS/EOS flags and chat templates.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::HfError;

/// The parts of `tokenizer_config.json` inference needs, plus the raw JSON for the rest.
#[derive(Clone, Debug)]
pub struct TokenizerConfig {
    raw: Value,
    /// Name → template. A plain string `chat_template` is stored under `"default"`.
    chat_templates: BTreeMap<String, String>,
    /// The beginning-of-sequence token's text (`bos_token`), if set.
    pub bos_token: Option<String>,
    /// The end-of-sequence token's text (`eos_token`), if set.
    pub eos_token: Option<String>,
    /// The unknown token's text (`unk_token`), if set.
    pub unk_token: Option<String>,
    /// The padding token's text (`pad_token`), if set.
    pub pad_token: Option<String>,
    /// Whether encoding prepends BOS (`add_bos_token`), if the file says.
    pub add_bos_token: Option<bool>,
    /// Whether encoding appends EOS (`add_eos_token`), if the file says.
    pub add_eos_token: Option<bool>,
    /// The longest input the model was trained for. `None` when absent or when it is
    /// transformers' "no limit" placeholder (`int(1e30)`, beyond `u64`).
    pub model_max_length: Option<u64>,
}

impl TokenizerConfig {
    /// Reads and parses `path`.
    pub fn from_file(path: &Path) -> Result<Self, HfError> {
        Self::from_value(path, super::read_json(path)?)
    }

    /// Parses JSON already read from `path` (which is only used in errors).
    pub fn from_value(path: &Path, raw: Value) -> Result<Self, HfError> {
        let bad = |key: &str, message: String| HfError::InvalidField {
            path: path.into(),
            key: key.into(),
            message,
        };
        let Value::Object(map) = &raw else {
            return Err(bad("", "the file is not a JSON object".into()));
        };
        let token = |key: &str| token_text(map, key).map_err(|m| bad(key, m));
        let flag = |key: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(key, format!("expected true/false, found {other}"))),
        };
        let model_max_length = match map.get("model_max_length") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(v), _) => Some(v),
                (None, Some(f)) if f >= u64::MAX as f64 => None,
                _ => {
                    return Err(bad(
                        "model_max_length",
                        format!("expected a non-negative integer, found {n}"),
                    ))
                }
            },
            Some(other) => {
                return Err(bad(
                    "model_max_length",
                    format!("expected an integer, found {other}"),
                ))
            }
        };
        let chat_templates = match map.get("chat_template") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::String(s)) => BTreeMap::from([("default".to_string(), s.clone())]),
            Some(Value::Array(items)) => {
                let mut out = BTreeMap::new();
                for (i, item) in items.iter().enumerate() {
                    let (Some(name), Some(template)) = (
                        item.get("name").and_then(Value::as_str),
                        item.get("template").and_then(Value::as_str),
                    ) else {
                        return Err(bad(
                            "chat_template",
                            format!("entry {i} is not {{\"name\": ..., \"template\": ...}}"),
                        ));
                    };
                    out.insert(name.to_string(), template.to_string());
                }
                out
            }
            Some(_) => {
                return Err(bad(
                    "chat_template",
                    "expected a string or a list of {name, template}".into(),
                ))
            }
        };
        Ok(TokenizerConfig {
            chat_templates,
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            unk_token: token("unk_token")?,
            pad_token: token("pad_token")?,
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
            model_max_length,
            raw,
        })
    }

    /// The whole file as JSON.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The default chat template: the `chat_template` string, or the entry named `"default"`
    /// when it is a list. `None` when there is none (a list without `"default"` included,
    /// as transformers then asks for a name).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template_named("default")
    }

    /// A chat template by name (`"default"`, `"tool_use"`, `"rag"`, ...).
    pub fn chat_template_named(&self, name: &str) -> Option<&str> {
        self.chat_templates.get(name).map(String::as_str)
    }

    /// The names of all chat templates, sorted.
    pub fn chat_template_names(&self) -> impl Iterator<Item = &str> {
        self.chat_templates.keys().map(String::as_str)
    }
}

/// A special token given as a string, as an AddedToken object (`{"content": "<s>", ...}`,
/// sometimes with `"__type": "AddedToken"`), or as null.
fn token_text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err("token object has no string `content`".into()),
        },
        Some(other) => Err(format!(
            "expected a string, an AddedToken object or null, found {other}"
        )),
    }
}
