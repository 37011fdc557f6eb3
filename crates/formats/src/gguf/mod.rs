//! GGUF files (versions 2 and 3) and split models.
//!
//! # Format
//!
//! A GGUF file is little-endian throughout:
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key: string, value_type u32, value)
//! tensor_count × (name: string, n_dims u32, ne[n_dims] u64, ggml_type u32, offset u64)
//! padding to `general.alignment` (default 32)
//! tensor data: each tensor at data_start + offset, offset a multiple of the alignment
//! ```
//!
//! A string is a u64 byte length and UTF-8 bytes. Value types are 0 u8, 1 i8, 2 u16, 3 i16,
//! 4 u32, 5 i32, 6 f32, 7 bool (one byte, 0 or 1), 8 string, 9 array (element type u32, count
//! u64, elements; arrays may nest), 10 u64, 11 i64, 12 f64. `ne[0]` is the innermost dimension
//! (the row length); a tensor takes `row_bytes(ne[0]) * ne[1] * ne[2] * ne[3]` bytes, its row
//! being a whole number of its type's blocks. Version 1 used u32 counts and is rejected, as are
//! big-endian files (whose version field reads byte-swapped).
//!
//! Split models (llama.cpp's `gguf-split`) are files `PREFIX-00001-of-0000N.gguf` ...; each
//! carries `split.no` (u16, 0-based), `split.count` (u16) and `split.tensors.count` (i32, all
//! splits together); the first split holds the model's metadata.
//!
//! Reference: the GGUF specification in the ggml repository (`docs/gguf.md`).
//!
//! # Safety against malformed files
//!
//! [`parse_header`] never panics and never allocates more than a small multiple of the input
//! size: every count is bounded by the bytes left before anything is allocated for it. Tensor
//! data is never read at open; views borrow the memory map.

mod error;
mod metadata;
mod parse;
mod split;
mod write;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the GGUF reader assumes 64-bit usize (tensor sizes are u64 in the file)");

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::GgufError;
pub use metadata::{MetaValue, Metadata};
pub use parse::{
    parse_header, GgufTensorInfo, ParsedHeader, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    MAX_ARRAY_DEPTH, MAX_DIMS,
};
pub use split::{split_paths, GgufModel, SplitName};
pub use write::{GgufStream, GgufWriteError, GgufWriter, TensorDecl};

use crate::tensor::{TensorInfo, TensorSource, TensorView};

/// The file's bytes: a memory map, or nothing for an empty file (which cannot be mapped).
enum Bytes {
    Mapped(memmap2::Mmap),
    Empty,
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Empty => &[],
        }
    }
}

/// One memory-mapped GGUF file with its parsed header.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    header: ParsedHeader,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("metadata_len", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file and parses its header. Tensor data is not read (only the header pages of
    /// the map are touched). Errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |error| GgufError::Io {
            path: path.to_owned(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bytes = if len == 0 {
            Bytes::Empty
        } else {
            // SAFETY: the map is read-only and private to this process. Another process
            // truncating or rewriting the file while it is mapped would change the bytes under
            // us (or fault); as with every memory-mapped model loader, model files are assumed
            // not to be modified while in use.
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        let header = parse_header(bytes.as_slice()).map_err(|e| e.in_file(path))?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_owned(),
            bytes,
            header,
            by_name,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute file offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// `general.architecture` (`llama`, `deepseek2`, `qwen3moe`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.header.metadata.get_str("general.architecture")
    }

    /// The tensor entries as stored (dimensions innermost first), in file order.
    pub fn gguf_tensors(&self) -> &[GgufTensorInfo] {
        &self.header.tensors
    }

    /// The whole parsed header.
    pub fn header(&self) -> &ParsedHeader {
        &self.header
    }

    /// Where `bytes` lies in the file: its offset, when it is a view into this file's map
    /// (for readers that fetch the same bytes with their own I/O, such as an expert cache).
    pub fn offset_of(&self, bytes: &[u8]) -> Option<u64> {
        crate::tensor::offset_in(self.bytes.as_slice(), bytes)
    }

    /// Tells the kernel that the map is read at random (`MADV_RANDOM`): no readahead around a
    /// touched page. Best effort; errors are ignored.
    pub fn advise_random(&self) {
        if let Bytes::Mapped(m) = &self.bytes {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }

    /// `MADV_DONTNEED` on the whole pages inside `bytes`, when they are a view into this
    /// file's map ([`TensorSource::release`]): the process drops them from its resident set;
    /// the map is read-only and file-backed, so a later read faults them back in from the file
    /// and nothing is lost. Pages shared with a neighbouring tensor are kept. Best effort.
    pub fn release(&self, bytes: &[u8]) {
        #[cfg(unix)]
        if let (Bytes::Mapped(m), Some(offset)) = (&self.bytes, self.offset_of(bytes)) {
            // OK: sysconf(_SC_PAGESIZE) takes no pointer and cannot fail on a unix system.
            let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
                p if p > 0 => p as usize,
                _ => return,
            };
            // The map starts on a page, so page-aligned offsets are page-aligned addresses.
            let start = (offset as usize).next_multiple_of(page);
            let end = (offset as usize + bytes.len()) / page * page;
            if end > start {
                // SAFETY: the map is a read-only shared mapping of a file; dropping its pages
                // only makes the next access read them from the file again, so every slice
                // of it stays valid and keeps its contents.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = bytes;
    }

    /// [`TensorSource::populate`]: maps the pages of `bytes` into the process when they are a
    /// view into this file's map.
    pub fn populate(&self, bytes: &[u8]) {
        if let (Bytes::Mapped(m), Some(offset)) = (&self.bytes, self.offset_of(bytes)) {
            crate::tensor::populate_range(m, offset as usize, bytes.len());
        }
    }

    /// The data of tensor `t`, one of this file's entries.
    fn data_of(&self, t: &GgufTensorInfo) -> &[u8] {
        // OK to cast and index: parse_header checked data_offset + offset + nbytes <= file length.
        let start = (self.header.data_offset + t.offset) as usize;
        &self.bytes.as_slice()[start..start + t.nbytes]
    }

    /// A view of tensor `t`, one of this file's entries.
    fn view_of<'a>(&'a self, t: &'a GgufTensorInfo) -> TensorView<'a> {
        TensorView {
            name: &t.name,
            dtype: t.dtype,
            shape: t.shape(),
            data: self.data_of(t),
        }
    }
}

/// The shared [`TensorInfo`] of a GGUF entry (shape reversed into row-major order).
fn tensor_info(t: &GgufTensorInfo) -> TensorInfo {
    TensorInfo {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape(),
        nbytes: t.nbytes,
    }
}

impl TensorSource for GgufFile {
    fn tensor_infos(&self) -> Vec<TensorInfo> {
        self.header.tensors.iter().map(tensor_info).collect()
    }

    fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let &i = self.by_name.get(name)?;
        Some(self.view_of(&self.header.tensors[i]))
    }

    fn release(&self, bytes: &[u8]) {
        GgufFile::release(self, bytes);
    }

    fn populate(&self, bytes: &[u8]) {
        GgufFile::populate(self, bytes);
    }
}
