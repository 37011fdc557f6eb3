//! Tensor views: a name, a type, a shape and borrowed bytes from a memory-mapped file.

use crate::dtype::DType;

/// A borrowed view of one tensor's bytes inside a mapped model file. No copy is made.
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    /// The name as stored in the file (`blk.0.attn_q.weight` in GGUF,
    /// `model.layers.0.self_attn.q_proj.weight` in safetensors).
    pub name: &'a str,
    /// Element or block type.
    pub dtype: DType,
    /// Row-major shape, outermost dimension first (PyTorch order). GGUF lists dimensions
    /// innermost first (`ne[0]` is the row length); readers reverse them into this order.
    pub shape: Vec<usize>,
    /// The raw bytes, exactly `dtype.row_bytes(last dim) * product(other dims)` long.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Metadata about one tensor, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name as stored in the file.
    pub name: String,
    /// Element or block type.
    pub dtype: DType,
    /// Row-major shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Size of the tensor's data in bytes.
    pub nbytes: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Anything that holds named tensors: a GGUF file (or its splits), a set of safetensors shards.
/// Shared between threads: a model's layers are loaded in parallel from one source.
pub trait TensorSource: Sync {
    /// Every tensor's metadata, in file order.
    fn tensor_infos(&self) -> Vec<TensorInfo>;
    /// A view of the named tensor, or `None` if the source has no tensor of that name.
    fn tensor(&self, name: &str) -> Option<TensorView<'_>>;
    /// Tells the source that `bytes` (a tensor view's data, or part of one) will not be read
    /// again soon, e.g. after a reader copied them into another layout: a mapped file drops
    /// the whole pages inside them from the process (they are read back from the file if
    /// touched again). Best effort; bytes the source does not map are left alone.
    fn release(&self, _bytes: &[u8]) {}
    /// Tells the source that `bytes` will be read a row at a time, at random, for as long as
    /// the model runs (an embedding table): a mapped file maps every page of them into the
    /// process now, so that no later read stops on a page fault. Without this each token's
    /// first read of its row faults, which costs a few µs and, when the page cache is under
    /// pressure, sometimes a millisecond. Nothing is copied: the pages stay the file's, and
    /// the kernel may still reclaim them. Best effort; bytes the source does not map are
    /// left alone.
    fn populate(&self, _bytes: &[u8]) {}
}

/// The offset of `part` within `whole` when `part` is a sub-slice of it (same memory), else
/// `None`. Compares addresses only; no byte is read.
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> Option<u64> {
    let base = whole.as_ptr() as usize;
    let start = part.as_ptr() as usize;
    (start >= base && start + part.len() <= base + whole.len()).then(|| (start - base) as u64)
}

/// Prefaults `len` bytes of `map` from `offset` (whole pages around them): Linux's
/// `MADV_POPULATE_READ` maps them all in one call, reading from the file what the page cache
/// lacks; where that is missing (before Linux 5.14, other systems) `MADV_WILLNEED` at least
/// starts reading them into the page cache. Best effort: errors are ignored.
pub(crate) fn populate_range(map: &memmap2::Mmap, offset: usize, len: usize) {
    #[cfg(unix)]
    {
        let len = len.min(map.len().saturating_sub(offset));
        if len == 0 {
            return;
        }
        #[cfg(target_os = "linux")]
        if map
            .advise_range(memmap2::Advice::PopulateRead, offset, len)
            .is_ok()
        {
            return;
        }
        let _ = map.advise_range(memmap2::Advice::WillNeed, offset, len);
    }
    #[cfg(not(unix))]
    let _ = (map, offset, len);
}
