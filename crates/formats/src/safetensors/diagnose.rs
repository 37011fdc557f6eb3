//! The precise-error pass: run only after the `safetensors` crate rejected a file, it re-reads
//! the header step by step and reports the first problem with the tensor, dtype and offsets
//! involved. It never accepts a file; when it finds nothing, the crate's error is returned.

use std::path::Path;

use serde_json::Value;

use super::{SafetensorsError, HEADER_LEN_BYTES};
use crate::dtype::DType;

/// The header size limit of the `safetensors` crate (`MAX_HEADER_SIZE`).
const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor's header fields, checked for type but not yet for consistency.
struct RawEntry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

/// Finds why `bytes` is not a valid safetensors file; `err` is what the crate said.
pub(super) fn diagnose(
    path: &Path,
    bytes: &[u8],
    err: safetensors::SafeTensorError,
) -> SafetensorsError {
    match find_problem(path, bytes) {
        Some(precise) => precise,
        None => SafetensorsError::Invalid {
            path: path.into(),
            source: err,
        },
    }
}

fn find_problem(path: &Path, bytes: &[u8]) -> Option<SafetensorsError> {
    let p = || path.to_path_buf();
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(..HEADER_LEN_BYTES) else {
        return Some(SafetensorsError::TooShort {
            path: p(),
            len: file_len,
        });
    };
    // OK because the slice is exactly 8 bytes long.
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8-byte slice"));
    if header_len > MAX_HEADER_LEN {
        return Some(SafetensorsError::HeaderTooLarge {
            path: p(),
            header_len,
        });
    }
    // header_len <= 1e8, so this neither overflows nor truncates.
    let data_start = HEADER_LEN_BYTES + header_len as usize;
    let Some(header) = bytes.get(HEADER_LEN_BYTES..data_start) else {
        return Some(SafetensorsError::HeaderPastEof {
            path: p(),
            header_len,
            file_len,
        });
    };
    let header = match std::str::from_utf8(header) {
        Ok(s) => s,
        Err(source) => return Some(SafetensorsError::HeaderNotUtf8 { path: p(), source }),
    };
    let invalid = |message: String| Some(SafetensorsError::InvalidHeader { path: p(), message });
    let json: Value = match serde_json::from_str(header) {
        Ok(v) => v,
        Err(e) => return invalid(e.to_string()),
    };
    let Value::Object(map) = &json else {
        return invalid(format!("expected a JSON object, found {}", kind(&json)));
    };

    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            if let Err(message) = check_metadata(value) {
                return invalid(message);
            }
            continue;
        }
        match raw_entry(name, value) {
            Ok(e) => entries.push(e),
            Err(message) => return invalid(format!("tensor `{name}`: {message}")),
        }
    }
    for e in &entries {
        if DType::from_safetensors_name(e.dtype).is_none() {
            return Some(SafetensorsError::UnknownDtype {
                path: p(),
                tensor: e.name.into(),
                dtype: e.dtype.into(),
            });
        }
    }

    // Same rule as the writer: sorted by offsets, tensors tile the data section exactly.
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut expected_begin = 0u64;
    for e in &entries {
        if e.begin != expected_begin || e.end < e.begin {
            return Some(SafetensorsError::BadOffsets {
                path: p(),
                tensor: e.name.into(),
                begin: e.begin,
                end: e.end,
                expected_begin,
            });
        }
        expected_begin = e.end;
        // OK because every dtype was checked above.
        let dtype = DType::from_safetensors_name(e.dtype).expect("dtype checked above");
        let expected = e
            .shape
            .iter()
            .try_fold(dtype.type_size() as u128, |acc, &d| {
                acc.checked_mul(u128::from(d))
            });
        let Some(expected) = expected.filter(|&x| x <= u128::from(u64::MAX)) else {
            return Some(SafetensorsError::ShapeOverflow {
                path: p(),
                tensor: e.name.into(),
                shape: e.shape.clone(),
            });
        };
        let actual = e.end - e.begin;
        if expected != u128::from(actual) {
            return Some(SafetensorsError::SizeMismatch {
                path: p(),
                tensor: e.name.into(),
                dtype: e.dtype.into(),
                shape: e.shape.clone(),
                expected,
                actual,
            });
        }
    }
    let actual = file_len - data_start as u64;
    if expected_begin != actual {
        return Some(SafetensorsError::DataLength {
            path: p(),
            expected: expected_begin,
            actual,
        });
    }
    None
}

fn check_metadata(value: &Value) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::Object(m) => match m.iter().find(|(_, v)| !v.is_string()) {
            Some((k, v)) => Err(format!(
                "__metadata__ value of `{k}` is {}, expected a string",
                kind(v)
            )),
            None => Ok(()),
        },
        other => Err(format!(
            "__metadata__ is {}, expected an object of strings",
            kind(other)
        )),
    }
}

fn raw_entry<'a>(name: &'a str, value: &'a Value) -> Result<RawEntry<'a>, String> {
    let Value::Object(m) = value else {
        return Err(format!("expected an object, found {}", kind(value)));
    };
    let field = |key: &str| m.get(key).ok_or_else(|| format!("missing `{key}`"));
    let dtype = field("dtype")?.as_str().ok_or("`dtype` is not a string")?;
    let ints = |key: &str| -> Result<Vec<u64>, String> {
        let Value::Array(items) = field(key)? else {
            return Err(format!("`{key}` is not an array"));
        };
        items
            .iter()
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    format!("`{key}` holds {}, not a non-negative integer", short(v))
                })
            })
            .collect()
    };
    let shape = ints("shape")?;
    let offsets = ints("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(format!(
            "`data_offsets` has {} numbers, expected 2",
            offsets.len()
        ));
    };
    Ok(RawEntry {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

/// A number as written, anything else by kind (values may be huge).
fn short(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
