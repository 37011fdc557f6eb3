//! Several matrix products in one parallel step: the decode loop's way of keeping the thread
//! pool's hand-offs few.
//!
//! A decoder layer's products come in groups that read the same input (q/k/v of GQA, q and
//! `kv_a` of MLA, the gate and up projections of every chosen expert). Each group runs as one
//! [`ThreadPool::parallel_for`] over work items `(job, block of rows)`, claimed dynamically so
//! that a thread slowed by another process does not hold the others up. Every input row is
//! quantized once per activation format ([`ActsCache`]) and shared by all jobs of that format.
//!
//! Each output value is still one row's dot product ([`Linear::product_block`], i.e.
//! `quant::gemm`, equal to `vec_dot` bit for bit), so the result does not depend on the
//! thread count or on how the rows are split.

use std::cell::RefCell;
use std::ops::Range;

use frugal_kernels::pool::ThreadPool;
use frugal_kernels::quant::{ActFormat, QuantizedActs};

use super::linear::{Linear, PARALLEL_MIN_WORK};

/// Rows of a work item are a multiple of this (whole tiles for the gemm kernels).
const ROW_ALIGN: usize = 16;

/// The input of a product: `[t, cols]` f32 rows and, for quantized weights on the fast path,
/// the same rows in the weight's activation format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Acts<'x> {
    /// The `[t, cols]` f32 rows.
    pub f32: &'x [f32],
    /// Each row quantized (empty when the weight takes f32 rows).
    pub quantized: &'x [QuantizedActs],
}

impl Acts<'_> {
    /// Rows of the input.
    pub fn rows(&self, cols: usize) -> usize {
        self.f32.len() / cols.max(1)
    }
}

/// Reusable quantized copies of one `[t, cols]` input, one per activation format (a layer's
/// weights use at most a few). Buffers keep their allocations across calls.
#[derive(Debug, Default)]
pub(crate) struct ActsCache {
    /// `(format, rows)`; only the first `t` rows of each are current.
    slots: Vec<(ActFormat, Vec<QuantizedActs>)>,
    t: usize,
}

impl ActsCache {
    /// Forget the previous input (keeping the buffers).
    pub fn clear(&mut self) {
        self.t = 0;
        for slot in &mut self.slots {
            slot.0 = ActFormat::F32;
        }
    }

    /// Quantize the rows of `x` (`[t, cols]`) to `format` unless already done since the last
    /// [`ActsCache::clear`].
    pub fn prepare(&mut self, format: ActFormat, x: &[f32], cols: usize) {
        let t = x.len() / cols.max(1);
        if self.t != t {
            self.clear();
            self.t = t;
        }
        if self.slots.iter().any(|s| s.0 == format) {
            return;
        }
        let slot = match self.slots.iter().position(|s| s.0 == ActFormat::F32) {
            Some(i) => i,
            None => {
                self.slots.push((ActFormat::F32, Vec::new()));
                self.slots.len() - 1
            }
        };
        let rows = &mut self.slots[slot].1;
        if rows.len() < t {
            rows.resize_with(t, QuantizedActs::new);
        }
        for (a, xr) in rows.iter_mut().zip(x.chunks_exact(cols)) {
            a.quantize(format, xr)
                // OK because every quantized weight's `cols` is whole blocks of its type, and
                // every type's activation blocks are as long as its own (checked at load).
                .expect("activation row is whole blocks");
        }
        self.slots[slot].0 = format;
    }

    /// The input for products with `lin` ([`ActsCache::prepare`]d for its format).
    pub fn acts<'x>(&'x self, lin: &Linear<'_>, x: &'x [f32]) -> Acts<'x> {
        let quantized = match lin.act_format() {
            None => &[][..],
            Some(f) => {
                let slot = self
                    .slots
                    .iter()
                    .find(|s| s.0 == f)
                    // OK because callers prepare every format before asking.
                    .expect("activation format prepared");
                &slot.1[..self.t]
            }
        };
        Acts { f32: x, quantized }
    }
}

thread_local! {
    /// A work item's `[t, rows]` block before it is scattered into a strided output.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The quantized input of the product being run from this thread.
    static INPUT: RefCell<ActsCache> = RefCell::new(ActsCache::default());
}

/// Run `f` with this thread's input cache (a fresh one if it is in use: re-entered).
pub(crate) fn with_acts_cache<R>(f: impl FnOnce(&mut ActsCache) -> R) -> R {
    INPUT.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut ActsCache::default()),
    })
}

/// Run `f` with a `len`-value scratch buffer of this thread (reused across calls).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    BLOCK.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            if s.len() < len {
                s.resize(len, 0.0);
            }
            f(&mut s[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// An output matrix that tasks write disjoint parts of.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks write disjoint elements only (see `write_block`'s contract), and the borrow
// the pointer came from outlives the parallel call.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Share `out` for the duration of one parallel call.
    pub fn new(out: &mut [f32]) -> Self {
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// `out[range]` as a slice.
    ///
    /// # Safety
    /// No other task touches `range` while the slice lives, and the borrow given to
    /// [`SharedOut::new`] is still alive.
    // A shared handle giving out disjoint mutable parts is the point of this type.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, range: Range<usize>) -> &mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// Writes a `[t, n]` product block into a `[t, stride]` output at column `col`,
    /// computing it straight into place when `t == 1` and through scratch otherwise.
    ///
    /// # Safety
    /// As [`SharedOut::slice`], for the elements `ti * stride + col .. + n` of every `ti < t`.
    pub unsafe fn write_block(
        &self,
        t: usize,
        n: usize,
        col: usize,
        stride: usize,
        compute: impl FnOnce(&mut [f32], usize),
    ) {
        if t == 1 {
            // SAFETY: the caller's promise for row 0.
            compute(unsafe { self.slice(col..col + n) }, n);
            return;
        }
        with_scratch(t * n, |buf| {
            compute(buf, n);
            // SAFETY: the caller's promise.
            unsafe { self.scatter(buf, n, col, stride) };
        });
    }

    /// Copies a `[t, n]` block into a `[t, stride]` output at column `col`.
    ///
    /// # Safety
    /// As [`SharedOut::write_block`].
    pub unsafe fn scatter(&self, block: &[f32], n: usize, col: usize, stride: usize) {
        if n == 0 {
            return;
        }
        for (ti, part) in block.chunks_exact(n).enumerate() {
            let at = ti * stride + col;
            // SAFETY: the caller's promise for row `ti`.
            unsafe { self.slice(at..at + n) }.copy_from_slice(part);
        }
    }
}

/// How many rows each work item of an `rows`-row product takes when `threads` share the
/// step: a few items per thread (dynamic balance), whole tiles, and at most all rows.
pub(crate) fn rows_per_item(rows: usize, threads: usize) -> usize {
    if threads <= 1 {
        return rows.max(1);
    }
    let per = rows.div_ceil(4 * threads);
    per.div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN
}

/// Run `item(job, i)` for every job and each of its `items[job]` work items, as one parallel
/// step over up to `threads` threads (serially on this thread when `work` multiply-adds are
/// too few to be worth a hand-off).
pub(crate) fn run_items(
    threads: usize,
    work: usize,
    items: &[usize],
    item: impl Fn(usize, usize) + Sync,
) {
    let total: usize = items.iter().sum();
    let locate = |mut k: usize| {
        for (job, &n) in items.iter().enumerate() {
            if k < n {
                return (job, k);
            }
            k -= n;
        }
        unreachable!("item index below the total")
    };
    if threads <= 1 || work < PARALLEL_MIN_WORK || total <= 1 {
        (0..total).for_each(|k| {
            let (job, i) = locate(k);
            item(job, i)
        });
        return;
    }
    ThreadPool::global(threads).parallel_for(total, |k| {
        let (job, i) = locate(k);
        item(job, i)
    });
}

/// `Y_j = X W_j^T` for several weights sharing one input `x` (`[t, cols]`), in one parallel
/// step; `outs[j]` receives `[t, lins[j].rows()]`. The input is quantized once per format.
pub(crate) fn forward_many(
    lins: &[&Linear<'_>],
    x: &[f32],
    outs: &mut [&mut [f32]],
    threads: usize,
) {
    assert_eq!(
        lins.len(),
        outs.len(),
        "forward_many: one output per weight"
    );
    let Some(first) = lins.first() else {
        return;
    };
    let cols = first.cols();
    assert!(
        lins.iter().all(|l| l.cols() == cols) && x.len().is_multiple_of(cols),
        "forward_many: inputs are not [t, {cols}]"
    );
    let t = x.len() / cols;
    for (l, o) in lins.iter().zip(outs.iter()) {
        assert_eq!(o.len(), t * l.rows(), "{}: output length", l.name());
    }
    with_acts_cache(|cache| {
        cache.clear();
        for l in lins {
            if let Some(f) = l.act_format() {
                cache.prepare(f, x, cols);
            }
        }
        let cache = &*cache;
        let work: usize = lins.iter().map(|l| t * l.rows() * cols).sum();
        let per: Vec<usize> = lins
            .iter()
            .map(|l| rows_per_item(l.rows(), threads))
            .collect();
        let items: Vec<usize> = lins
            .iter()
            .zip(&per)
            .map(|(l, &p)| l.rows().div_ceil(p))
            .collect();
        let shared: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut::new(o)).collect();
        run_items(threads, work, &items, |j, i| {
            let lin = lins[j];
            let rows = i * per[j]..((i + 1) * per[j]).min(lin.rows());
            let acts = cache.acts(lin, x);
            // SAFETY: items of job j cover disjoint row ranges, i.e. disjoint columns of
            // `outs[j]`, which stays borrowed for the whole call.
            unsafe {
                shared[j].write_block(t, rows.len(), rows.start, lin.rows(), |o, stride| {
                    lin.product_block(acts, rows.clone(), o, stride)
                })
            };
        });
    });
}
