//! A counting global allocator for the decode-allocation tests (issue 6): every allocation
//! and reallocation, on every thread (the calling thread and the thread pool's workers), is
//! counted while a step runs. Each test binary using it holds ONE `#[test]`: tests running in
//! parallel would allocate under the counter. `FRUGAL_ALLOC_BACKTRACE=1` prints where the
//! first counted allocation of a step came from.
#![allow(dead_code)] // Each test crate uses a different subset.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use frugal_model::{KvCache, Model};

/// `System`, counting allocations and reallocations while [`COUNTING`] is on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BACKTRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread is inside the allocator's own bookkeeping (printing a backtrace).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn count(&self) {
        if !COUNTING.load(SeqCst) {
            return;
        }
        // The backtrace's own allocations are not the step's.
        if INSIDE.with(Cell::get) {
            return;
        }
        let first = ALLOCS.fetch_add(1, SeqCst) == 0;
        if first && BACKTRACE.load(SeqCst) && !INSIDE.with(|i| i.replace(true)) {
            eprintln!(
                "first allocation of the step:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            INSIDE.with(|i| i.set(false));
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; counting touches only atomics and a
// const-initialised thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads `FRUGAL_ALLOC_BACKTRACE` (call once at the start of the test).
pub fn init() {
    BACKTRACE.store(
        std::env::var("FRUGAL_ALLOC_BACKTRACE").is_ok_and(|v| v == "1"),
        SeqCst,
    );
}

/// Warm-up tokens of the counted pass decoded before counting (the first steps grow the
/// scratch buffers).
pub const WARM_UP: usize = 3;

/// Decodes `tokens` one at a time on a cache reserved for all of them, at `threads` threads,
/// twice: one whole pass uncounted, then a second pass on a fresh cache whose steps after
/// the first [`WARM_UP`] are counted. Why two passes: the pool's workers claim work items
/// dynamically, so on a loaded machine a worker may not take part in the first few steps and
/// would grow its per-thread scratch, once, inside a counted step (seen once in a parallel
/// workspace run). A whole pass gives every thread its turn first. The second pass's cache
/// is prefaulted ([`KvCache::prefault`]), as `frugal bench` and `frugal run` do: its logits
/// must still be transformers', and its steps must not allocate. Returns the second
/// pass's logits of every step `[tokens.len(), vocab]` and each counted step's allocations.
pub fn decode(model: &mut Model<'_>, tokens: &[u32], threads: usize) -> (Vec<f32>, Vec<usize>) {
    model.set_threads(threads);
    let mut logits = Vec::new();
    let (mut all, mut counts) = (Vec::new(), Vec::new());
    for pass in 0..2 {
        let mut cache = KvCache::with_capacity(model, tokens.len());
        if pass == 1 {
            cache.prefault();
        }
        all.clear();
        for (i, &token) in tokens.iter().enumerate() {
            let counted = pass == 1 && i >= WARM_UP;
            if counted {
                ALLOCS.store(0, SeqCst);
                COUNTING.store(true, SeqCst);
            }
            let r = model.forward_last_into(&[token], i, &mut cache, &mut logits);
            COUNTING.store(false, SeqCst);
            r.unwrap();
            if counted {
                counts.push(ALLOCS.load(SeqCst));
            }
            all.extend_from_slice(&logits);
        }
    }
    (all, counts)
}

/// Asserts every counted step of `what` allocated nothing, printing the counts.
pub fn assert_no_allocs(what: &str, counts: &[usize]) {
    eprintln!("{what}: allocations per counted decode step {counts:?}");
    assert!(
        counts.iter().all(|&c| c == 0),
        "{what}: decode steps allocated {counts:?} times (FRUGAL_ALLOC_BACKTRACE=1 shows where)"
    );
}
