//! Reading byte ranges of a model file without growing the page cache: `pread` with
//! `O_DIRECT` when the file system allows it, else buffered `pread` followed by
//! `posix_fadvise(POSIX_FADV_DONTNEED)` on the range just read.
//!
//! `O_DIRECT` moves data straight from the device into the caller's buffer, so the bytes never
//! enter the page cache; it requires the file offset, the length and the buffer address to be
//! multiples of the device's logical block size. [`ALIGN`] (4096) is a multiple of every
//! common block size, so a range `[offset, offset + len)` is read as the aligned superset
//! `[align_down(offset), align_up(offset + len))` into a buffer aligned to [`ALIGN`], and the
//! wanted bytes start `offset - align_down(offset)` into it ([`span`]).

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of direct-I/O offsets, lengths and buffers.
pub const ALIGN: usize = 4096;

/// `x` rounded up to a multiple of [`ALIGN`].
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// The aligned superset of `[offset, offset + len)`: `(aligned start, aligned length, where
/// the wanted bytes start within it)`.
pub fn span(offset: u64, len: usize) -> (u64, usize, usize) {
    let start = offset / ALIGN as u64 * ALIGN as u64;
    let end = align_up(offset + len as u64);
    (start, (end - start) as usize, (offset - start) as usize)
}

/// A model file opened for reading ranges.
#[derive(Debug)]
pub struct RangeReader {
    path: PathBuf,
    direct: File,
    /// The same file opened without `O_DIRECT`, for when direct reads are refused.
    buffered: File,
    /// Whether `direct` is (still) usable.
    use_direct: AtomicBool,
}

impl RangeReader {
    /// Opens `path`, with `O_DIRECT` if the file system accepts it.
    pub fn open(path: &Path) -> io::Result<RangeReader> {
        let buffered = File::open(path)?;
        let (direct, use_direct) = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => (f, true),
            // tmpfs and some network file systems refuse O_DIRECT (EINVAL).
            Err(_) => (File::open(path)?, false),
        };
        Ok(RangeReader {
            path: path.to_owned(),
            direct,
            buffered,
            use_direct: AtomicBool::new(use_direct),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.use_direct.load(Ordering::Relaxed)
    }

    /// Reads `[offset, offset + len)` into `buf` (aligned to [`ALIGN`], at least
    /// `span(offset, len).1` long) at `span(offset, len).2`; the bytes before and after may be
    /// overwritten with the neighbouring file bytes. A range past the end of the file is an
    /// `UnexpectedEof` error.
    pub fn read_range(&self, offset: u64, len: usize, buf: &mut [u8]) -> io::Result<()> {
        let (start, span_len, head) = span(offset, len);
        assert!(buf.len() >= span_len && (buf.as_ptr() as usize).is_multiple_of(ALIGN));
        if self.is_direct() {
            match read_full(&self.direct, start, &mut buf[..span_len], head + len) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The device wants a larger alignment, or the file system only pretended
                    // to accept O_DIRECT: buffered reads from now on.
                    tracing::info!(
                        "{}: direct reads refused ({e}); reading through the page cache and dropping the pages after each read",
                        self.path.display()
                    );
                    self.use_direct.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let out = read_full(&self.buffered, offset, &mut buf[head..head + len], len);
        // Drop the pages just read from the page cache, so reads do not grow the machine's
        // cached memory (a hint; errors are of no consequence).
        // SAFETY: a plain system call on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                self.buffered.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        out
    }
}

/// `pread` into `buf` from `offset` until `buf` is full or the file ends; at least `need`
/// bytes must arrive.
fn read_full(file: &File, offset: u64, buf: &mut [u8], need: usize) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if done < need {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "read {done} of {need} bytes at offset {offset}: the file is shorter than expected"
            ),
        ));
    }
    Ok(())
}

/// Memory aligned to [`ALIGN`], allocated once and never moved: the expert cache's slots.
/// Pages are only backed by memory once written (the allocation itself is not touched).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a plain owned allocation; who may write which part is the owner's business (the
// cache hands out disjoint slots under its lock).
unsafe impl Send for AlignedBuf {}
// SAFETY: as above.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` bytes (rounded up to [`ALIGN`]); an empty buffer allocates nothing.
    pub fn new(len: usize) -> AlignedBuf {
        let len = align_up(len as u64) as usize;
        if len == 0 {
            return AlignedBuf {
                ptr: NonNull::dangling(),
                len: 0,
            };
        }
        // OK to unwrap: ALIGN is a power of two and len a multiple of it.
        let layout = Layout::from_size_align(len, ALIGN).expect("aligned layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `[start, start + len)` for reading.
    ///
    /// # Safety
    /// No one may be writing the range meanwhile, and it must have been written before.
    pub unsafe fn range(&self, start: usize, len: usize) -> &[u8] {
        assert!(start + len <= self.len);
        // SAFETY: in bounds (checked); the caller guarantees no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) }
    }

    /// `[start, start + len)` for writing.
    ///
    /// # Safety
    /// No one else may be reading or writing the range meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range_mut(&self, start: usize, len: usize) -> &mut [u8] {
        assert!(start + len <= self.len);
        // SAFETY: in bounds (checked); the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // OK to unwrap: the same layout as at allocation.
            let layout = Layout::from_size_align(self.len, ALIGN).expect("aligned layout");
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn span_covers_the_range_aligned() {
        assert_eq!(span(0, 10), (0, 4096, 0));
        assert_eq!(span(4095, 2), (0, 8192, 4095));
        assert_eq!(span(8192, 4096), (8192, 4096, 0));
        assert_eq!(span(5000, 100), (4096, 4096, 904));
    }

    #[test]
    fn reads_ranges_equal_to_the_file_and_fails_past_its_end() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        let r = RangeReader::open(f.path()).unwrap();
        let buf = AlignedBuf::new(3 * ALIGN);
        for (off, len) in [(0u64, 10usize), (4000, 300), (12_345, 7_000), (19_990, 10)] {
            let (_, span_len, head) = span(off, len);
            // SAFETY: the buffer is ours alone.
            let b = unsafe { buf.range_mut(0, span_len) };
            r.read_range(off, len, b).unwrap();
            assert_eq!(
                &b[head..head + len],
                &data[off as usize..off as usize + len]
            );
        }
        // SAFETY: as above.
        let b = unsafe { buf.range_mut(0, ALIGN * 2) };
        let e = r.read_range(19_990, 100, b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
