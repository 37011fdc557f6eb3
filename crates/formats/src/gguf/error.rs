//! Errors of the GGUF reader.

use std::path::PathBuf;

use crate::dtype::DType;

/// Why a GGUF file or split model could not be read. Every variant names what is wrong
/// (the key, the tensor, the file); nothing in a malformed file panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, sized or mapped.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error. (Shown in the message, so deliberately not an error `source`: chains
        /// printed with `{:#}` would repeat it.)
        error: std::io::Error,
    },
    /// An error inside one file; says which.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (shown in the message, so not an error `source`).
        error: Box<GgufError>,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: the first bytes are {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The bytes found (fewer than four if the file is that short).
        found: Vec<u8>,
    },
    /// GGUF v1 (32-bit counts) or a version this reader does not know.
    #[error("unsupported GGUF version {version}: only versions 2 and 3 are supported{}",
        if *version == 1 { " (v1 files are obsolete; re-convert the model with a current llama.cpp)" } else { "" })]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// The version field reads as a byte-swapped 2 or 3: a big-endian file.
    #[error("big-endian GGUF file (version field {version:#010x} is a byte-swapped {}); only little-endian files are supported", version.swap_bytes())]
    BigEndian {
        /// The version field as read little-endian.
        version: u32,
    },
    /// The file ends inside a field.
    #[error("truncated file: {what} needs {needed} bytes at offset {offset}, but the file ends at {file_len}")]
    Truncated {
        /// The field being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// Its size in bytes.
        needed: u64,
        /// The file's size.
        file_len: u64,
    },
    /// A count read from the file cannot fit in the bytes that remain.
    #[error("{what}: count {count} cannot fit in the {remaining} bytes left in the file")]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The count read.
        count: u64,
        /// Bytes left after the count.
        remaining: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string (a key, the value of a key, a tensor name).
        what: String,
        /// Where the string's bytes start.
        offset: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("metadata key '{key}': unknown value type id {type_id}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id read.
        type_id: u32,
    },
    /// Arrays nested deeper than the reader allows.
    #[error("metadata key '{key}': arrays nested deeper than {limit} levels")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The depth limit.
        limit: usize,
    },
    /// A bool byte other than 0 or 1.
    #[error("metadata key '{key}': bool byte is {value}, expected 0 or 1")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte read.
        value: u8,
    },
    /// A key appears twice.
    #[error("metadata key '{key}' appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` has the wrong type, is zero, or is not a power of two.
    #[error("general.alignment must be a non-zero power of two stored as u32, found {found}")]
    BadAlignment {
        /// The value found, with its type.
        found: String,
    },
    /// A tensor name appears twice (within a file or across splits).
    #[error("tensor '{name}' appears twice")]
    DuplicateTensor {
        /// The tensor.
        name: String,
    },
    /// A tensor has more dimensions than GGUF allows.
    #[error("tensor '{tensor}': {n_dims} dimensions, at most {max} allowed")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// The number of dimensions read.
        n_dims: u32,
        /// The limit.
        max: u32,
    },
    /// A `ggml_type` id this reader does not know.
    #[error("tensor '{tensor}': unknown ggml type id {type_id}")]
    UnknownGgmlType {
        /// The tensor.
        tensor: String,
        /// The type id read.
        type_id: u32,
    },
    /// The row length is not a whole number of quantization blocks.
    #[error("tensor '{tensor}': row length {row_len} is not a multiple of {dtype}'s block size {block_size}")]
    PartialBlock {
        /// The tensor.
        tensor: String,
        /// Its type.
        dtype: DType,
        /// `ne[0]`.
        row_len: u64,
        /// The type's block size.
        block_size: usize,
    },
    /// The tensor's element count or byte size overflows.
    #[error("tensor '{tensor}': shape {ne:?} (innermost first) is too large")]
    SizeOverflow {
        /// The tensor.
        tensor: String,
        /// The dimensions as stored, innermost first.
        ne: Vec<u64>,
    },
    /// A tensor offset is not a multiple of the data alignment.
    #[error("tensor '{tensor}': offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// The tensor.
        tensor: String,
        /// The offset relative to the data section.
        offset: u64,
        /// `general.alignment`.
        alignment: u64,
    },
    /// A tensor's data extends past the end of the file.
    #[error("tensor '{tensor}': data at bytes {start}..{end} lies past the end of the file ({file_len} bytes)")]
    DataOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start offset (may be saturated if it overflows).
        start: u64,
        /// Absolute end offset (may be saturated if it overflows).
        end: u64,
        /// The file's size.
        file_len: u64,
    },
    /// A split of a split model is missing.
    #[error("split {index} of {count} is missing: {}", path.display())]
    MissingSplit {
        /// The file that should exist.
        path: PathBuf,
        /// Its 1-based number.
        index: usize,
        /// Number of splits.
        count: usize,
    },
    /// A split's `split.*` keys disagree with its file name or with the other splits.
    #[error("{}: metadata key '{key}' is {found}, expected {expected}", path.display())]
    SplitMismatch {
        /// The split file.
        path: PathBuf,
        /// The key (`split.no`, `split.count`, `split.tensors.count`).
        key: &'static str,
        /// What the file says (`missing` when absent).
        found: String,
        /// What its name or the first split says.
        expected: String,
    },
    /// The splits together hold a different number of tensors than `split.tensors.count` says.
    #[error(
        "split model has {found} tensors in its files, but split.tensors.count says {expected}"
    )]
    SplitTensorCount {
        /// `split.tensors.count`.
        expected: u64,
        /// Tensors found in all splits.
        found: u64,
    },
    /// A tensor appears in two splits.
    #[error("tensor '{name}' appears in both {} and {}", first.display(), second.display())]
    DuplicateTensorAcrossSplits {
        /// The tensor.
        name: String,
        /// The split where it appears first.
        first: PathBuf,
        /// The split where it appears again.
        second: PathBuf,
    },
}

impl GgufError {
    /// The error without its [`GgufError::InFile`] wrapper, for matching on what went wrong.
    pub fn innermost(&self) -> &GgufError {
        match self {
            GgufError::InFile { error, .. } => error.innermost(),
            other => other,
        }
    }

    /// Wraps `self` with the file it came from.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> GgufError {
        GgufError::InFile {
            path: path.into(),
            error: Box::new(self),
        }
    }
}
