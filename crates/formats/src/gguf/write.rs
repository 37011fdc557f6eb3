//! Writing GGUF (version 3) files, in the layout the reader takes (see the module doc of
//! [`crate::gguf`]): header, metadata, tensor directory, zero padding to the alignment, then
//! each tensor's data padded to the alignment.
//!
//! The directory (names, types, shapes) is declared first, so the header — which holds every
//! tensor's offset — can be written before any data; the data then follows tensor by tensor
//! ([`GgufWriter::begin`] → [`GgufStream::write_tensor`] × n → [`GgufStream::finish`]), so a
//! model is never held in memory whole. Offsets and padding are what gguf-py's `GGUFWriter`
//! and llama.cpp's `gguf_write_to_file` produce: for the same content the bytes are the same
//! (the tests check that against files gguf-py wrote).

use std::io::Write;

use super::{MetaValue, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use crate::DType;

/// Errors while declaring or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufWriteError {
    /// Writing to the output failed.
    #[error("writing GGUF: {0}")]
    Io(#[from] std::io::Error),
    /// The same metadata key twice.
    #[error("metadata key '{0}' is set twice")]
    DuplicateKey(String),
    /// The same tensor name twice.
    #[error("tensor '{0}' is declared twice")]
    DuplicateTensor(String),
    /// An array whose elements are not all of one type.
    #[error("metadata key '{key}': array elements of different types ({first} and {other})")]
    MixedArray {
        /// The key.
        key: String,
        /// The first element's type.
        first: &'static str,
        /// A later element's different type.
        other: &'static str,
    },
    /// `general.alignment` that is not a non-zero power of two stored as u32.
    #[error("general.alignment must be a power of two stored as u32, got {0}")]
    BadAlignment(String),
    /// A tensor type with no GGUF id, a shape with too many dimensions or not whole blocks.
    #[error("tensor '{name}': {why}")]
    BadTensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Tensor data of another size than its declaration.
    #[error("tensor '{name}': declared {expected} bytes, got {got}")]
    SizeMismatch {
        /// The tensor.
        name: String,
        /// Bytes its type and shape take.
        expected: u64,
        /// Bytes given.
        got: u64,
    },
    /// More tensors written than declared, or fewer at `finish`.
    #[error("{declared} tensors declared, {written} written")]
    TensorCount {
        /// Declared.
        declared: usize,
        /// Written.
        written: usize,
    },
}

/// One declared tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    /// Its name.
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// Dimensions innermost first (GGUF's `ne`; `ne[0]` is the row length).
    pub ne: Vec<u64>,
    /// Data bytes (without padding).
    pub nbytes: u64,
    /// Offset from the start of the data section.
    pub offset: u64,
}

/// A GGUF file being declared: metadata in order, then tensors in order.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    kv: Vec<(String, MetaValue)>,
    tensors: Vec<TensorDecl>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Appends a key; errors if it is already set.
    pub fn add_kv(&mut self, key: &str, value: MetaValue) -> Result<(), GgufWriteError> {
        if self.kv.iter().any(|(k, _)| k == key) {
            return Err(GgufWriteError::DuplicateKey(key.to_owned()));
        }
        check_value(key, &value)?;
        self.kv.push((key.to_owned(), value));
        Ok(())
    }

    /// Sets a key as llama.cpp's `gguf_set_val_*` does: any old value is removed and the key
    /// goes to the end.
    pub fn set_kv(&mut self, key: &str, value: MetaValue) -> Result<(), GgufWriteError> {
        self.remove_kv(key);
        self.add_kv(key, value)
    }

    /// Removes a key if present.
    pub fn remove_kv(&mut self, key: &str) {
        self.kv.retain(|(k, _)| k != key);
    }

    /// The metadata so far, in order.
    pub fn kv(&self) -> &[(String, MetaValue)] {
        &self.kv
    }

    /// The alignment the data will use: `general.alignment` if set, else 32.
    pub fn alignment(&self) -> Result<u64, GgufWriteError> {
        match self.kv.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, MetaValue::U32(a))) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some((_, v)) => Err(GgufWriteError::BadAlignment(format!(
                "{} {v}",
                v.type_name()
            ))),
        }
    }

    /// Declares the next tensor: type and `ne` (innermost first). Its data must later be
    /// written in declaration order.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dtype: DType,
        ne: &[u64],
    ) -> Result<(), GgufWriteError> {
        let bad = |why: String| GgufWriteError::BadTensor {
            name: name.to_owned(),
            why,
        };
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufWriteError::DuplicateTensor(name.to_owned()));
        }
        if dtype.ggml_id().is_none() {
            return Err(bad(format!("type {dtype} has no GGUF id")));
        }
        if ne.is_empty() || ne.len() > MAX_DIMS as usize {
            return Err(bad(format!(
                "{} dimensions (1 to {MAX_DIMS} allowed)",
                ne.len()
            )));
        }
        let row = usize::try_from(ne[0])
            .ok()
            .and_then(|n| dtype.row_bytes(n))
            .ok_or_else(|| bad(format!("a row of {} is not whole {dtype} blocks", ne[0])))?;
        let nbytes = ne[1..]
            .iter()
            .try_fold(row as u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("size overflows".into()))?;
        self.tensors.push(TensorDecl {
            name: name.to_owned(),
            dtype,
            ne: ne.to_vec(),
            nbytes,
            offset: 0,
        });
        Ok(())
    }

    /// The declared tensors (offsets are filled in by [`GgufWriter::begin`]).
    pub fn tensors(&self) -> &[TensorDecl] {
        &self.tensors
    }

    /// The header bytes (metadata, directory, padding) with every tensor's offset set.
    pub fn header_bytes(&mut self) -> Result<Vec<u8>, GgufWriteError> {
        let align = self.alignment()?;
        let mut offset = 0u64;
        for t in &mut self.tensors {
            t.offset = offset;
            offset += pad(t.nbytes, align);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut b, k);
            b.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut b, v);
        }
        for t in &self.tensors {
            put_str(&mut b, &t.name);
            b.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                b.extend_from_slice(&d.to_le_bytes());
            }
            // OK: add_tensor checked the type has an id.
            b.extend_from_slice(&t.dtype.ggml_id().unwrap_or(0).to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
        }
        b.resize(pad(b.len() as u64, align) as usize, 0);
        Ok(b)
    }

    /// Writes the header to `out`; the tensors' data follow through the returned stream.
    pub fn begin<W: Write>(mut self, mut out: W) -> Result<GgufStream<W>, GgufWriteError> {
        let header = self.header_bytes()?;
        out.write_all(&header)?;
        Ok(GgufStream {
            align: self.alignment()?,
            decl: self,
            out,
            next: 0,
            partial: 0,
            written: header.len() as u64,
        })
    }
}

/// A GGUF file whose header is written, taking its tensors' data in declaration order.
pub struct GgufStream<W: Write> {
    decl: GgufWriter,
    out: W,
    next: usize,
    /// Bytes of the current tensor written so far (by `write_tensor_part`).
    partial: u64,
    align: u64,
    written: u64,
}

impl<W: Write> GgufStream<W> {
    /// The tensor whose data comes next, if any.
    pub fn next_tensor(&self) -> Option<&TensorDecl> {
        self.decl.tensors.get(self.next)
    }

    /// Writes the next tensor's data (exactly its declared size) and its padding.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<(), GgufWriteError> {
        let expected = self.current()?.nbytes;
        if self.partial != 0 || data.len() as u64 != expected {
            let t = self.current()?;
            return Err(GgufWriteError::SizeMismatch {
                name: t.name.clone(),
                expected: t.nbytes,
                got: self.partial + data.len() as u64,
            });
        }
        self.write_tensor_part(data)
    }

    /// Writes the next piece of the current tensor's data; once its declared size is reached
    /// the padding follows and the next tensor becomes current. Large tensors can so be
    /// produced a slab of rows at a time.
    pub fn write_tensor_part(&mut self, data: &[u8]) -> Result<(), GgufWriteError> {
        let t = self.current()?;
        let (name, nbytes) = (t.name.clone(), t.nbytes);
        let total = self.partial + data.len() as u64;
        if total > nbytes {
            return Err(GgufWriteError::SizeMismatch {
                name,
                expected: nbytes,
                got: total,
            });
        }
        self.out.write_all(data)?;
        self.partial = total;
        if total == nbytes {
            let padding = pad(nbytes, self.align) - nbytes;
            self.out.write_all(&vec![0u8; padding as usize])?;
            self.written += nbytes + padding;
            self.next += 1;
            self.partial = 0;
        }
        Ok(())
    }

    /// The tensor being written, or an error when all are done.
    fn current(&self) -> Result<&TensorDecl, GgufWriteError> {
        self.decl
            .tensors
            .get(self.next)
            .ok_or(GgufWriteError::TensorCount {
                declared: self.decl.tensors.len(),
                written: self.next + 1,
            })
    }

    /// Checks every declared tensor was written, flushes, and returns the output and the
    /// number of bytes written.
    pub fn finish(mut self) -> Result<(W, u64), GgufWriteError> {
        if self.next != self.decl.tensors.len() || self.partial != 0 {
            return Err(GgufWriteError::TensorCount {
                declared: self.decl.tensors.len(),
                written: self.next,
            });
        }
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

fn pad(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// GGUF's value type id of `v`.
fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

/// Arrays must hold one element type (nested arrays may differ in length and inner type).
fn check_value(key: &str, v: &MetaValue) -> Result<(), GgufWriteError> {
    if let MetaValue::Array(a) = v {
        if let Some(first) = a.first() {
            for e in a {
                if type_id(e) != type_id(first) {
                    return Err(GgufWriteError::MixedArray {
                        key: key.to_owned(),
                        first: first.type_name(),
                        other: e.type_name(),
                    });
                }
                check_value(key, e)?;
            }
        }
    }
    Ok(())
}

fn put_value(b: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => b.push(*x),
        MetaValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => b.push(u8::from(*x)),
        MetaValue::String(s) => put_str(b, s),
        MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => {
            // An empty array keeps no element type in `MetaValue`; it is written as u8 (the
            // reader accepts any type for zero elements).
            let elem = a.first().map_or(0, type_id);
            b.extend_from_slice(&elem.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for e in a {
                put_value(b, e);
            }
        }
    }
}
