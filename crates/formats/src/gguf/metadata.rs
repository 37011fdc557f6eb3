//! GGUF metadata: typed key/value pairs in file order.

use std::collections::HashMap;
use std::fmt;

/// One metadata value, as typed in the file (GGUF value types 0..=12).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // The variants are the GGUF value types of the same name.
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Elements all share one type (nested arrays may differ in length).
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// The GGUF name of this value's type (`u32`, `string`, `array`, ...), for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }

    /// The value as an `i128` if it has an integer type; wide enough for both u64 and i64.
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a `u64` if it is an integer of any type and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// The value as an `i64` if it is an integer of any type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// The value as an `f64` if it is numeric (float or integer). Large 64-bit integers round.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::String(v) => write!(f, "{v:?}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
            MetaValue::Array(a) => {
                // Vocabularies hold 10^5 entries; show the head only.
                const SHOWN: usize = 8;
                f.write_str("[")?;
                for (i, v) in a.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() > SHOWN {
                    write!(f, ", ... ({} total)", a.len())?;
                }
                f.write_str("]")
            }
        }
    }
}

/// GGUF metadata: key/value pairs in file order, with lookup by key. Keys are unique
/// (the parser rejects duplicates).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Adds a pair at the end; if the key is already present, returns the value back as `Err`
    /// and leaves the set unchanged.
    pub fn insert(&mut self, key: String, value: MetaValue) -> Result<(), MetaValue> {
        if self.index.contains_key(&key) {
            return Err(value);
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// The value of `key`, of any type.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The value of `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// The value of `key` if it is a non-negative integer of any integer type.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// The value of `key` if it is an integer of any integer type that fits an `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// The value of `key` if it is numeric (any float or integer type).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    /// The value of `key` if it is a bool.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// The value of `key` if it is an array of strings.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(MetaValue::as_str)
            .collect()
    }

    /// The value of `key` if it is an array of numbers (any numeric type, converted to `f32`).
    pub fn get_f32_array(&self, key: &str) -> Option<Vec<f32>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(|v| match *v {
                // Keep f32 values bit-exact rather than going through f64.
                MetaValue::F32(x) => Some(x),
                _ => v.as_f64().map(|x| x as f32),
            })
            .collect()
    }

    /// The value of `key` if it is an array of integers (any integer type that fits an `i64`).
    pub fn get_i64_array(&self, key: &str) -> Option<Vec<i64>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(MetaValue::as_i64)
            .collect()
    }

    /// Every pair, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: Vec<(&str, MetaValue)>) -> Metadata {
        let mut m = Metadata::new();
        for (k, v) in pairs {
            m.insert(k.to_owned(), v)
                .expect("OK because test keys are distinct");
        }
        m
    }

    #[test]
    fn integer_getters_convert_between_widths() {
        let m = md(vec![
            ("neg", MetaValue::I8(-3)),
            ("big", MetaValue::U64(u64::MAX)),
            ("small", MetaValue::U16(7)),
            ("f", MetaValue::F32(1.5)),
            ("s", MetaValue::String("x".into())),
        ]);
        assert_eq!(m.get_u64("neg"), None);
        assert_eq!(m.get_i64("neg"), Some(-3));
        assert_eq!(m.get_u64("big"), Some(u64::MAX));
        assert_eq!(m.get_i64("big"), None);
        assert_eq!(m.get_u64("small"), Some(7));
        assert_eq!(m.get_f64("small"), Some(7.0));
        assert_eq!(m.get_f64("f"), Some(1.5));
        assert_eq!(m.get_u64("f"), None);
        assert_eq!(m.get_str("s"), Some("x"));
        assert_eq!(m.get_str("small"), None);
        assert_eq!(m.get("missing"), None);
    }

    #[test]
    fn array_getters_require_uniform_elements() {
        let m = md(vec![
            (
                "strs",
                MetaValue::Array(vec![
                    MetaValue::String("a".into()),
                    MetaValue::String("b".into()),
                ]),
            ),
            (
                "mixed",
                MetaValue::Array(vec![MetaValue::String("a".into()), MetaValue::I32(1)]),
            ),
            (
                "ints",
                MetaValue::Array(vec![MetaValue::I32(-1), MetaValue::U8(2)]),
            ),
        ]);
        assert_eq!(m.get_str_array("strs"), Some(vec!["a", "b"]));
        assert_eq!(m.get_str_array("mixed"), None);
        assert_eq!(m.get_i64_array("ints"), Some(vec![-1, 2]));
        assert_eq!(m.get_f32_array("ints"), Some(vec![-1.0, 2.0]));
        assert_eq!(m.get_i64_array("strs"), None);
    }

    #[test]
    fn insert_rejects_duplicates_and_keeps_order() {
        let mut m = md(vec![("b", MetaValue::U8(1)), ("a", MetaValue::U8(2))]);
        assert_eq!(
            m.insert("b".into(), MetaValue::U8(3)),
            Err(MetaValue::U8(3))
        );
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(m.len(), 2);
    }
}
