//! `generation_config.json`: the checkpoint's default sampling settings and stop tokens.

use std::path::Path;

use serde_json::Value;

use super::HfError;

/// The keys of `generation_config.json` that inference uses; other keys are ignored, keys set to
/// `null` count as absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationConfig {
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id`: one id or a list (Llama 3 and Qwen stop on several); empty when absent.
    pub eos_token_id: Vec<u32>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u32>,
    /// `do_sample`: whether to sample rather than decode greedily.
    pub do_sample: Option<bool>,
    /// `temperature`.
    pub temperature: Option<f32>,
    /// `top_p`: nucleus sampling mass.
    pub top_p: Option<f32>,
    /// `top_k` (0 disables it; some files use -1 for that too).
    pub top_k: Option<i64>,
    /// `min_p`.
    pub min_p: Option<f32>,
    /// `repetition_penalty`.
    pub repetition_penalty: Option<f32>,
    /// `max_new_tokens`.
    pub max_new_tokens: Option<u64>,
    /// `max_length`: prompt plus generated tokens.
    pub max_length: Option<u64>,
}

impl GenerationConfig {
    /// Reads and parses `path`.
    pub fn from_file(path: &Path) -> Result<Self, HfError> {
        Self::from_value(path, &super::read_json(path)?)
    }

    /// Parses JSON already read from `path` (which is only used in errors).
    pub fn from_value(path: &Path, json: &Value) -> Result<Self, HfError> {
        let bad = |key: &str, what: &str, v: &Value| HfError::InvalidField {
            path: path.into(),
            key: key.into(),
            message: format!("expected {what}, found {v}"),
        };
        let Value::Object(map) = json else {
            return Err(bad("", "a JSON object", json));
        };
        let get = |key: &str| map.get(key).filter(|v| !v.is_null());
        let id = |key: &str| -> Result<Option<u32>, HfError> {
            get(key)
                .map(|v| {
                    as_int(v)
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| bad(key, "a token id", v))
                })
                .transpose()
        };
        let float = |key: &str| -> Result<Option<f32>, HfError> {
            get(key)
                .map(|v| {
                    v.as_f64()
                        .map(|f| f as f32)
                        .ok_or_else(|| bad(key, "a number", v))
                })
                .transpose()
        };
        let count = |key: &str| -> Result<Option<u64>, HfError> {
            get(key)
                .map(|v| {
                    as_int(v)
                        .and_then(|i| u64::try_from(i).ok())
                        .ok_or_else(|| bad(key, "a non-negative integer", v))
                })
                .transpose()
        };
        let eos_token_id = match get("eos_token_id") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    as_int(v)
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| bad("eos_token_id", "token ids", v))
                })
                .collect::<Result<_, _>>()?,
            Some(v) => vec![as_int(v)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad("eos_token_id", "a token id or a list of them", v))?],
        };
        Ok(GenerationConfig {
            bos_token_id: id("bos_token_id")?,
            eos_token_id,
            pad_token_id: id("pad_token_id")?,
            do_sample: get("do_sample")
                .map(|v| v.as_bool().ok_or_else(|| bad("do_sample", "true/false", v)))
                .transpose()?,
            temperature: float("temperature")?,
            top_p: float("top_p")?,
            top_k: get("top_k")
                .map(|v| as_int(v).ok_or_else(|| bad("top_k", "an integer", v)))
                .transpose()?,
            min_p: float("min_p")?,
            repetition_penalty: float("repetition_penalty")?,
            max_new_tokens: count("max_new_tokens")?,
            max_length: count("max_length")?,
        })
    }
}

/// An integer, also when written as a float with no fraction (`50.0`), as Python may save it.
fn as_int(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    // The range check keeps the cast exact; `fract` rejects 0.5 and NaN.
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}
