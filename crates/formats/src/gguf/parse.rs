//! The pure header parser: bytes in, [`ParsedHeader`] out. No I/O, no panics, and no
//! allocation larger than a small multiple of the input's size.

use std::collections::HashSet;

use super::error::GgufError;
use super::metadata::{MetaValue, Metadata};
use crate::dtype::DType;

/// `"GGUF"` read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The key that overrides the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a GGUF tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Deepest array nesting accepted. Real files nest at most once; the limit keeps a crafted
/// file from exhausting the stack through recursion.
pub const MAX_ARRAY_DEPTH: usize = 16;

/// Smallest encoded size of one tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Smallest encoded size of one key/value pair: key length (8) + type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 13;

/// One tensor's entry in the header, as stored (dimensions innermost first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Its type.
    pub dtype: DType,
    /// Dimensions as stored: `ne[0]` is the row length (innermost).
    pub ne: Vec<u64>,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub nbytes: usize,
}

impl GgufTensorInfo {
    /// The row-major shape, outermost first (`ne` reversed).
    pub fn shape(&self) -> Vec<usize> {
        // OK to cast: the parser checked that the product of `ne` fits in an i64, so each
        // dimension fits in usize on the 64-bit targets this crate supports.
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Everything in a GGUF header, plus where the tensor data starts.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// The metadata, in file order.
    pub metadata: Metadata,
    /// Tensor entries, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Size of the header proper: the offset just past the last tensor info.
    pub header_len: u64,
    /// Absolute file offset of the data section: `header_len` rounded up to `alignment`.
    pub data_offset: u64,
}

/// A read position in the input; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        // OK to cast: n <= remaining, which came from a usize.
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        // OK because `take` returned exactly N bytes.
        Ok(s.try_into().expect("take returns the requested length"))
    }

    fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then that many UTF-8 bytes.
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        let start = self.pos as u64;
        let bytes = self.take(len, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset: start,
            }),
        }
    }
}

/// Value type ids (GGUF `gguf_type`).
mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Smallest encoded size of a value of type `ty`, or `None` for an unknown type. Strings take
/// at least their 8-byte length; arrays their 4-byte element type and 8-byte count.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 | vt::STRING => 8,
        vt::ARRAY => 12,
        _ => return None,
    })
}

/// Reads one value of type `ty` (already read) belonging to `key`.
fn read_value(
    c: &mut Cursor<'_>,
    ty: u32,
    key: &str,
    depth: usize,
) -> Result<MetaValue, GgufError> {
    let what = || format!("value of metadata key '{key}'");
    Ok(match ty {
        vt::U8 => MetaValue::U8(c.u8(what)?),
        vt::I8 => MetaValue::I8(i8::from_le_bytes(c.array(what)?)),
        vt::U16 => MetaValue::U16(u16::from_le_bytes(c.array(what)?)),
        vt::I16 => MetaValue::I16(i16::from_le_bytes(c.array(what)?)),
        vt::U32 => MetaValue::U32(c.u32(what)?),
        vt::I32 => MetaValue::I32(i32::from_le_bytes(c.array(what)?)),
        vt::F32 => MetaValue::F32(f32::from_le_bytes(c.array(what)?)),
        vt::U64 => MetaValue::U64(c.u64(what)?),
        vt::I64 => MetaValue::I64(i64::from_le_bytes(c.array(what)?)),
        vt::F64 => MetaValue::F64(f64::from_le_bytes(c.array(what)?)),
        vt::BOOL => match c.u8(what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            value => {
                return Err(GgufError::InvalidBool {
                    key: key.to_owned(),
                    value,
                })
            }
        },
        vt::STRING => MetaValue::String(c.string(what)?),
        vt::ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_owned(),
                    limit: MAX_ARRAY_DEPTH,
                });
            }
            let elem_ty = c.u32(|| format!("array element type of metadata key '{key}'"))?;
            let Some(min) = min_value_size(elem_ty) else {
                return Err(GgufError::UnknownValueType {
                    key: key.to_owned(),
                    type_id: elem_ty,
                });
            };
            let count = c.u64(|| format!("array length of metadata key '{key}'"))?;
            // Bound the allocation by the bytes left: each element takes at least `min` bytes.
            if count > c.remaining() / min {
                return Err(GgufError::CountTooLarge {
                    what: format!("array of metadata key '{key}'"),
                    count,
                    remaining: c.remaining(),
                });
            }
            // OK to cast: count <= remaining bytes, which fit in usize.
            let mut elems = Vec::with_capacity(count as usize);
            for _ in 0..count {
                elems.push(read_value(c, elem_ty, key, depth + 1)?);
            }
            MetaValue::Array(elems)
        }
        type_id => {
            return Err(GgufError::UnknownValueType {
                key: key.to_owned(),
                type_id,
            })
        }
    })
}

/// Reads the alignment from the metadata: absent means 32; otherwise a non-zero power of two
/// stored as u32, as the GGUF spec requires.
fn alignment(metadata: &Metadata) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(MetaValue::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(v) => Err(GgufError::BadAlignment {
            found: format!("{} {v}", v.type_name()),
        }),
    }
}

/// Reads one tensor info and computes its byte size.
fn read_tensor_info(c: &mut Cursor<'_>, index: u64) -> Result<GgufTensorInfo, GgufError> {
    let name = c.string(|| format!("name of tensor #{index}"))?;
    let n_dims = c.u32(|| format!("dimension count of tensor '{name}'"))?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
            max: MAX_DIMS,
        });
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        ne.push(c.u64(|| format!("dimensions of tensor '{name}'"))?);
    }
    let type_id = c.u32(|| format!("type of tensor '{name}'"))?;
    let offset = c.u64(|| format!("data offset of tensor '{name}'"))?;
    let Some(dtype) = DType::from_ggml_id(type_id) else {
        return Err(GgufError::UnknownGgmlType {
            tensor: name,
            type_id,
        });
    };

    // ggml counts elements in an int64, so the product of the dimensions must fit in one. Zero
    // dimensions are skipped so that no partial product, in any order, can overflow either
    // (`[0, 2^40, 2^40]` has no elements, but 2^40 * 2^40 would overflow a later `numel()`).
    let nonzero = ne
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if nonzero.is_none_or(|n| n > i64::MAX as u64) {
        return Err(GgufError::SizeOverflow { tensor: name, ne });
    }
    let row_len = ne.first().copied().unwrap_or(1);
    if row_len % dtype.block_size() as u64 != 0 {
        return Err(GgufError::PartialBlock {
            tensor: name,
            dtype,
            row_len,
            block_size: dtype.block_size(),
        });
    }
    // OK to cast: every dimension is at most i64::MAX, which fits in usize on 64-bit targets.
    let nbytes = dtype.row_bytes(row_len as usize).and_then(|row| {
        ne.iter()
            .skip(1)
            .try_fold(row, |acc, &d| acc.checked_mul(d as usize))
    });
    let Some(nbytes) = nbytes else {
        return Err(GgufError::SizeOverflow { tensor: name, ne });
    };
    Ok(GgufTensorInfo {
        name,
        dtype,
        ne,
        offset,
        nbytes,
    })
}

/// Parses a GGUF header from `bytes`, the whole file (tensor data included, so that every
/// tensor's data range can be checked to lie inside it). Never reads tensor data itself.
///
/// Checks: magic, version (2 or 3; v1 and big-endian files are rejected), every count against
/// the bytes left, UTF-8 of keys, strings and names, value types, bool bytes, duplicate keys
/// and tensor names, `general.alignment`, dimension count, ggml type ids, whole blocks per row,
/// size overflow, offset alignment, and that tensor data lies within `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<ParsedHeader, GgufError> {
    let mut c = Cursor { bytes, pos: 0 };
    if bytes.len() < 4 || bytes[..4] != GGUF_MAGIC.to_le_bytes() {
        return Err(GgufError::BadMagic {
            found: bytes[..bytes.len().min(4)].to_vec(),
        });
    }
    c.pos = 4;
    let version = c.u32(|| "version".to_owned())?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 1..=3) => return Err(GgufError::BigEndian { version: v }),
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let tensor_count = c.u64(|| "tensor count".to_owned())?;
    let kv_count = c.u64(|| "metadata key/value count".to_owned())?;
    if kv_count > c.remaining() / MIN_KV_BYTES {
        return Err(GgufError::CountTooLarge {
            what: "metadata key/value pairs".to_owned(),
            count: kv_count,
            remaining: c.remaining(),
        });
    }

    let mut metadata = Metadata::new();
    for i in 0..kv_count {
        let key = c.string(|| format!("key of metadata pair #{i}"))?;
        let ty = c.u32(|| format!("value type of metadata key '{key}'"))?;
        let value = read_value(&mut c, ty, &key, 0)?;
        if metadata.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        // OK to ignore: the key was just checked to be absent.
        let _ = metadata.insert(key, value);
    }
    let alignment = alignment(&metadata)?;

    if tensor_count > c.remaining() / MIN_TENSOR_INFO_BYTES {
        return Err(GgufError::CountTooLarge {
            what: "tensor infos".to_owned(),
            count: tensor_count,
            remaining: c.remaining(),
        });
    }
    // OK to cast: bounded by the remaining bytes above.
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut names = HashSet::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let t = read_tensor_info(&mut c, i)?;
        if !names.insert(t.name.clone()) {
            return Err(GgufError::DuplicateTensor { name: t.name });
        }
        tensors.push(t);
    }

    // The header end fits in usize, so rounding it up to a u32 alignment cannot overflow u64.
    let header_len = c.pos as u64;
    let data_offset = header_len.div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.nbytes as u64));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                let start = start.unwrap_or(u64::MAX);
                return Err(GgufError::DataOutOfBounds {
                    tensor: t.name.clone(),
                    start,
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                });
            }
        }
    }
    Ok(ParsedHeader {
        version,
        metadata,
        tensors,
        alignment,
        header_len,
        data_offset,
    })
}
