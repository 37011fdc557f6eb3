//! safetensors files: one file ([`SafetensorsFile`]) or a folder of shards ([`SafetensorsModel`]).
//!
//! ## Format
//!
//! A safetensors file is an 8-byte little-endian header length `N`, then `N` bytes of UTF-8 JSON,
//! then the data section. The JSON maps each tensor name to
//! `{"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}`, offsets relative to
//! the start of the data section; the optional key `__metadata__` holds a string → string map.
//! Tensors are stored row-major, little-endian, packed back to back: sorted by offset, each
//! tensor starts where the previous one ends, and the last one ends at the end of the file.
//! Reference: <https://github.com/huggingface/safetensors> (README, "Format").
//!
//! ## How it is read
//!
//! Files are memory-mapped and tensors are handed out as borrowed slices; no tensor byte is
//! copied. The `safetensors` crate parses and validates the header, so what we accept is
//! exactly what the reference implementation accepts. When it rejects a file, a second pass
//! (`diagnose.rs`) finds the precise problem (which tensor, which dtype, which offsets) so the
//! error names it; whatever that pass cannot pin down is reported as the crate's own error,
//! wrapped with the file's path.
//!
//! Sharded checkpoints (`model-00001-of-00163.safetensors` ...) come with
//! `model.safetensors.index.json`, whose `weight_map` maps each tensor to its shard; see
//! [`SafetensorsModel::open_dir`].

mod diagnose;
mod model;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::dtype::DType;
use crate::tensor::{TensorInfo, TensorSource, TensorView};

pub use model::SafetensorsModel;

/// Length of the little-endian `u64` that starts every safetensors file.
pub const HEADER_LEN_BYTES: usize = 8;

/// Errors from reading safetensors files and shard indexes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsError {
    /// The file could not be opened, read or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is shorter than the 8-byte header length.
    #[error("{path}: file is {len} bytes, too short for the 8-byte header length")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The header length is beyond the safetensors limit (100 MB).
    #[error(
        "{path}: header length {header_len} is over the 100 MB limit (corrupt header length?)"
    )]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// The header length the file claims.
        header_len: u64,
    },
    /// The header length points past the end of the file.
    #[error("{path}: header length {header_len} runs past the end of the {file_len}-byte file (truncated?)")]
    HeaderPastEof {
        /// The file.
        path: PathBuf,
        /// The header length the file claims.
        header_len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The header is not UTF-8.
    #[error("{path}: header is not valid UTF-8: {source}")]
    HeaderNotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where decoding failed.
        source: std::str::Utf8Error,
    },
    /// The header is not JSON, or not of the expected shape.
    #[error("{path}: invalid JSON header: {message}")]
    InvalidHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor has a dtype string this crate does not know (or a dtype it cannot represent).
    #[error("{path}: tensor `{tensor}` has unknown or unsupported dtype `{dtype}`")]
    UnknownDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype string as written in the header.
        dtype: String,
    },
    /// A tensor's data offsets are reversed, overlap another tensor or leave a gap.
    #[error(
        "{path}: tensor `{tensor}` has data offsets [{begin}, {end}) but the previous tensor ends \
         at {expected_begin} (offsets overlap, leave a gap or are reversed)"
    )]
    BadOffsets {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its first data offset.
        begin: u64,
        /// Its end data offset.
        end: u64,
        /// Where it should begin: the end of the previous tensor in offset order.
        expected_begin: u64,
    },
    /// A tensor's byte length differs from shape × dtype size.
    #[error(
        "{path}: tensor `{tensor}` ({dtype}, shape {shape:?}) needs {expected} bytes but its \
         data offsets span {actual}"
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<u64>,
        /// shape × dtype size in bytes.
        expected: u128,
        /// `end - begin`.
        actual: u64,
    },
    /// A tensor's shape × dtype size overflows.
    #[error("{path}: tensor `{tensor}` has shape {shape:?}, whose size in bytes overflows")]
    ShapeOverflow {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<u64>,
    },
    /// The data section is shorter (truncated file) or longer than the header describes.
    #[error("{path}: data section is {actual} bytes but the header describes {expected} (truncated or trailing bytes)")]
    DataLength {
        /// The file.
        path: PathBuf,
        /// The end offset of the last tensor.
        expected: u64,
        /// The length of the data section.
        actual: u64,
    },
    /// The `safetensors` crate rejected the file for a reason the diagnosis pass did not find.
    #[error("{path}: invalid safetensors file: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The crate's error.
        source: safetensors::SafeTensorError,
    },
    /// A folder holds no safetensors weights.
    #[error("{dir}: no model.safetensors.index.json, model.safetensors or *.safetensors file")]
    NoWeights {
        /// The folder.
        dir: PathBuf,
    },
    /// `model.safetensors.index.json` is not valid.
    #[error("{path}: invalid shard index: {message}")]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The index names a shard file that does not exist.
    #[error("{index}: shard `{shard}` (holding tensor `{tensor}`, among others) does not exist")]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard's file name as written in the index.
        shard: String,
        /// One tensor the index puts in that shard.
        tensor: String,
    },
    /// The index assigns a tensor to a shard that does not contain it.
    #[error("{index}: tensor `{tensor}` is mapped to {shard}, which does not contain it")]
    TensorMissingFromShard {
        /// The index file.
        index: PathBuf,
        /// The shard file.
        shard: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// Two files of one model hold a tensor of the same name.
    #[error("tensor `{tensor}` is in both {first} and {second}")]
    DuplicateTensor {
        /// The tensor.
        tensor: String,
        /// The file that holds it first (in sorted file order).
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
}

/// The bytes behind a [`SafetensorsFile`]: a read-only map of the file, or a buffer handed in by
/// [`SafetensorsFile::from_bytes`] (tests and fuzzing).
#[derive(Debug)]
enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One tensor's header entry, with offsets made absolute (from the start of the file).
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// One safetensors file, mapped and validated.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    backing: Backing,
    /// In data-offset order (the order of the bytes in the file).
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SafetensorsError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| SafetensorsError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_LEN_BYTES as u64 {
            return Err(SafetensorsError::TooShort { path, len });
        }
        // SAFETY: the map is read-only and private to this struct. Model files are treated as
        // immutable while loaded (as by every mmap-based loader); if another process truncates
        // the file meanwhile, reads of the lost pages fault, which no safe API can prevent.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_backing(path, Backing::Mapped(map))
    }

    /// Parses a whole safetensors file held in memory: everything [`open`](Self::open) does
    /// except mapping. `path` is only used in error messages and [`path`](Self::path).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, SafetensorsError> {
        Self::from_backing(path.into(), Backing::Owned(bytes))
    }

    fn from_backing(path: PathBuf, backing: Backing) -> Result<Self, SafetensorsError> {
        let (entries, metadata) = parse(&path, backing.bytes())?;
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(SafetensorsFile {
            path,
            backing,
            entries,
            by_name,
            metadata,
        })
    }

    /// The file's path (or the label given to [`from_bytes`](Self::from_bytes)).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `bytes` lies in the file: its offset, when it is a view into this file's map.
    pub fn offset_of(&self, bytes: &[u8]) -> Option<u64> {
        match &self.backing {
            Backing::Mapped(m) => crate::tensor::offset_in(m, bytes),
            Backing::Owned(_) => None,
        }
    }

    /// `MADV_RANDOM` on the map (no readahead around a touched page). Best effort.
    pub fn advise_random(&self) {
        if let Backing::Mapped(m) = &self.backing {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }

    /// [`TensorSource::populate`]: maps the pages of `bytes` into the process when they are a
    /// view into this file's map.
    pub fn populate(&self, bytes: &[u8]) {
        if let (Backing::Mapped(m), Some(offset)) = (&self.backing, self.offset_of(bytes)) {
            crate::tensor::populate_range(m, offset as usize, bytes.len());
        }
    }

    /// The header's `__metadata__` map (empty when absent), e.g. `{"format": "pt"}`.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Tensor names in file (data-offset) order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Whether the file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn info_of(e: &Entry) -> TensorInfo {
        TensorInfo {
            name: e.name.clone(),
            dtype: e.dtype,
            shape: e.shape.clone(),
            nbytes: e.end - e.begin,
        }
    }

    fn view_of<'a>(&'a self, e: &'a Entry) -> TensorView<'a> {
        TensorView {
            name: &e.name,
            dtype: e.dtype,
            shape: e.shape.clone(),
            // OK to index: `parse` checked begin <= end <= file length for every entry.
            data: &self.backing.bytes()[e.begin..e.end],
        }
    }
}

impl TensorSource for SafetensorsFile {
    fn tensor_infos(&self) -> Vec<TensorInfo> {
        self.entries.iter().map(Self::info_of).collect()
    }

    fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let &i = self.by_name.get(name)?;
        Some(self.view_of(&self.entries[i]))
    }

    fn populate(&self, bytes: &[u8]) {
        SafetensorsFile::populate(self, bytes);
    }
}

/// Validates a whole file's bytes with the `safetensors` crate and returns its entries in offset
/// order plus `__metadata__`; on failure, asks [`diagnose`] for a precise error.
fn parse(
    path: &Path,
    bytes: &[u8],
) -> Result<(Vec<Entry>, BTreeMap<String, String>), SafetensorsError> {
    let (header_len, meta) = match SafeTensors::read_metadata(bytes) {
        Ok(ok) => ok,
        Err(err) => return Err(diagnose::diagnose(path, bytes, err)),
    };
    let data_start = HEADER_LEN_BYTES + header_len;
    let names = meta.offset_keys();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        // OK because `offset_keys` lists exactly the names `info` knows.
        let info = meta.info(&name).expect("offset_keys names a known tensor");
        let dtype_name = info.dtype.to_string();
        let Some(dtype) = DType::from_safetensors_name(&dtype_name) else {
            return Err(SafetensorsError::UnknownDtype {
                path: path.into(),
                tensor: name,
                dtype: dtype_name,
            });
        };
        let (b, e) = info.data_offsets;
        // The crate checked that offsets are contiguous and end exactly at the end of the
        // buffer, so these cannot overflow or exceed it; check anyway rather than trust.
        let (Some(begin), Some(end)) = (data_start.checked_add(b), data_start.checked_add(e))
        else {
            return Err(diagnose::diagnose(
                path,
                bytes,
                safetensors::SafeTensorError::ValidationOverflow,
            ));
        };
        if begin > end || end > bytes.len() {
            return Err(diagnose::diagnose(
                path,
                bytes,
                safetensors::SafeTensorError::InvalidOffset(name),
            ));
        }
        entries.push(Entry {
            name,
            dtype,
            shape: info.shape.clone(),
            begin,
            end,
        });
    }
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((entries, metadata))
}
