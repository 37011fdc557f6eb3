//! Buffers for the weight copies made at load (repacked matrices), backed by transparent huge
//! pages where the system offers them.
//!
//! Why: decode streams every active weight once per token, and with 4 KiB pages that is a TLB
//! miss every 4 KiB. Under virtualisation each miss is a two-level page walk. On the machine
//! of issue 6 (a VM, THP in `madvise` mode), a one-thread read of anonymous memory went from
//! about 25 to 30 GB/s when the memory was advised `MADV_HUGEPAGE`.
//!
//! Small copies (a routed expert's matrix is a few hundred KiB) cannot each be 2 MiB aligned
//! without wasting most of the memory, so they are carved out of shared chunks: anonymous maps
//! of [`CHUNK`] bytes, aligned to 2 MiB and advised as huge pages, handed out by bumping an
//! offset (each thread has its own chunk to cut from). A chunk is unmapped when the last
//! buffer in it is dropped (the allocator keeps only a weak reference), so dropping a model
//! returns its memory. Untouched tails of a chunk are never faulted in, so they cost address
//! space, not memory.
//!
//! Off Linux the chunks are plain anonymous maps.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use memmap2::MmapMut;

/// Bytes per shared chunk; larger requests get a chunk of their own.
pub const CHUNK: usize = 64 << 20;

/// The huge page size the chunks are aligned to.
const HUGE: usize = 2 << 20;

/// Offsets of buffers in a chunk are multiples of this (a cache line; the kernels' loads are
/// unaligned, but a line-aligned start keeps records from straddling lines needlessly).
const ALIGN: usize = 64;

/// One anonymous map, of which `[base, base + len)` (2 MiB aligned) is handed out.
struct Chunk {
    /// Keeps the map alive; unmapped on drop.
    _map: MmapMut,
    /// Start of the usable, aligned range.
    base: *mut u8,
    len: usize,
}

// SAFETY: the chunk's memory is only reached through `HugeBuf`s, each owning a disjoint range
// (see `HugeBuf::as_mut_slice`); the raw pointer is just the map's address.
unsafe impl Send for Chunk {}
// SAFETY: as above.
unsafe impl Sync for Chunk {}

impl Chunk {
    /// A map of at least `len` usable bytes starting on a 2 MiB boundary.
    fn new(len: usize) -> std::io::Result<Chunk> {
        let len = len.div_ceil(HUGE) * HUGE;
        let mut map = MmapMut::map_anon(len + HUGE)?;
        let at = map.as_mut_ptr().align_offset(HUGE).min(HUGE);
        #[cfg(target_os = "linux")]
        {
            // Best effort: a kernel without THP, or with it off, refuses or ignores it.
            let _ = map.advise_range(memmap2::Advice::HugePage, at, len);
        }
        // SAFETY: `at + len ≤ len + HUGE`, inside the map.
        let base = unsafe { map.as_mut_ptr().add(at) };
        Ok(Chunk {
            _map: map,
            base,
            len,
        })
    }
}

thread_local! {
    /// The chunk this thread cuts small buffers from, and how much of it is used. Per thread:
    /// the layers of a model load in parallel, and one layer's matrices should lie together,
    /// in load order, as they do when one thread loads them all (a step reading two adjacent
    /// matrices, such as GQA's q, k and v, is then one stream from memory).
    static CURRENT: RefCell<(Weak<Chunk>, usize)> = const { RefCell::new((Weak::new(), 0)) };
}

/// A zero-filled byte buffer in huge-page backed memory (module docs).
pub struct HugeBuf {
    /// `None` for an empty buffer.
    chunk: Option<Arc<Chunk>>,
    offset: usize,
    len: usize,
}

impl HugeBuf {
    /// `len` zero bytes. Fails only if the system refuses the map (out of address space or
    /// memory).
    pub fn zeroed(len: usize) -> std::io::Result<HugeBuf> {
        if len == 0 {
            return Ok(HugeBuf {
                chunk: None,
                offset: 0,
                len: 0,
            });
        }
        if len > CHUNK / 4 {
            return Ok(HugeBuf {
                chunk: Some(Arc::new(Chunk::new(len)?)),
                offset: 0,
                len,
            });
        }
        CURRENT.with_borrow_mut(|(weak, used)| {
            let start = used.div_ceil(ALIGN) * ALIGN;
            let chunk = match weak.upgrade() {
                Some(c) if start + len <= c.len => {
                    *used = start + len;
                    return Ok(HugeBuf {
                        chunk: Some(c),
                        offset: start,
                        len,
                    });
                }
                _ => Arc::new(Chunk::new(CHUNK)?),
            };
            *weak = Arc::downgrade(&chunk);
            *used = len;
            Ok(HugeBuf {
                chunk: Some(chunk),
                offset: 0,
                len,
            })
        })
    }

    /// A copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> std::io::Result<HugeBuf> {
        let mut b = HugeBuf::zeroed(bytes.len())?;
        b.as_mut_slice().copy_from_slice(bytes);
        Ok(b)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.chunk {
            // SAFETY: `offset + len ≤ chunk.len` (checked when cut), the chunk is alive while
            // `self` holds it, and no `&mut` to this range exists while `&self` is borrowed.
            Some(c) => unsafe { std::slice::from_raw_parts(c.base.add(self.offset), self.len) },
            None => &[],
        }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &self.chunk {
            // SAFETY: as `as_slice`; ranges of different buffers never overlap (each was cut
            // from an unused part of its chunk, and only one thread cuts from a chunk), so
            // `&mut self` is exclusive.
            Some(c) => unsafe { std::slice::from_raw_parts_mut(c.base.add(self.offset), self.len) },
            None => &mut [],
        }
    }
}

impl std::ops::Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Clone for HugeBuf {
    fn clone(&self) -> Self {
        // Cloning a repacked matrix is rare (tests); without memory for the copy, a Vec's
        // clone would abort too.
        HugeBuf::copy_of(self).expect("memory for a copy of a weight buffer")
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_disjoint_and_outlive_the_allocator_state() {
        let mut bufs: Vec<HugeBuf> = (0..200)
            .map(|i| HugeBuf::zeroed(1000 + 4093 * i).unwrap())
            .collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            assert!(b.iter().all(|&x| x == 0));
            assert_eq!(b.len(), 1000 + 4093 * i);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            b.as_mut_slice().fill(i as u8);
        }
        // Writing each did not touch any other.
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8), "buffer {i}");
        }
        let big = HugeBuf::copy_of(&vec![7u8; CHUNK / 2]).unwrap();
        assert_eq!(big.as_ptr() as usize % HUGE, 0);
        assert!(big.iter().all(|&x| x == 7));
        let copy = bufs[3].clone();
        assert_eq!(&copy[..], &bufs[3][..]);
        assert_ne!(copy.as_ptr(), bufs[3].as_ptr());
        drop(bufs);
        assert!(HugeBuf::zeroed(0).unwrap().is_empty());
        assert!(HugeBuf::zeroed(10).unwrap().iter().all(|&x| x == 0));
    }
}
