//! Several matrix products in one parallel step: the decode loop's way of keeping the thread
//! pool's hand-offs few.
//!
//! A decoder layer's products come in groups that read the same input (q/k/v of GQA, q and
//! `kv_a` of MLA, the gate and up projections of every chosen expert). Each group runs as one
//! [`ThreadPool::parallel_for_streams`] over work items `(job, block of rows)` in memory
//! order ([`ItemPlan`]): each thread streams through a contiguous run of them, and one that
//! finishes early takes over the end of another's, so that a thread slowed by another process
//! does not hold the others up. Every input row is
//! quantized once per activation format ([`ActsCache`]) and shared by all jobs of that format.
//!
//! Each output value is still one row's dot product ([`Linear::product_block`], i.e.
//! `quant::gemm`, equal to `vec_dot` bit for bit), so the result does not depend on the
//! thread count or on how the rows are split.

use std::cell::RefCell;
use std::ops::Range;

use frugal_kernels::pool::ThreadPool;
use frugal_kernels::quant::{ActFormat, QuantizedActs};
use smallvec::SmallVec;

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
        self.prepare_par(format, x, cols, 1);
    }

    /// [`ActsCache::prepare`] with the rows spread over up to `threads` threads when there
    /// are enough of them (prefill).
    pub fn prepare_par(&mut self, format: ActFormat, x: &[f32], cols: usize, threads: usize) {
        let t = x.len() / cols.max(1);
        if let Some(rows) = self.reserve(format, t) {
            quantize_rows(
                &mut [QuantRequest {
                    rows,
                    format,
                    x,
                    cols,
                }],
                threads,
            );
        }
    }

    /// The first `rows.len()` slots for `format`, holding the quantized rows `rows` of
    /// `from` (which has them prepared for `format`): gathering the rows of a token group
    /// gives the same bytes as quantizing the gathered rows, without quantizing them again.
    pub fn gather(&mut self, from: &ActsCache, format: ActFormat, rows: &[usize]) {
        let src = from.rows(format);
        if let Some(dst) = self.reserve(format, rows.len()) {
            for (d, &r) in dst.iter_mut().zip(rows) {
                d.clone_from(&src[r]);
            }
        }
    }

    /// Marks `format` as held for `t` rows (the input changes when `t` does) and returns its
    /// `t` slots to fill, or `None` when it is already held.
    pub fn reserve(&mut self, format: ActFormat, t: usize) -> Option<&mut [QuantizedActs]> {
        if self.t != t {
            self.clear();
            self.t = t;
        }
        if self.slots.iter().any(|s| s.0 == format) {
            return None;
        }
        let slot = match self.slots.iter().position(|s| s.0 == ActFormat::F32) {
            Some(i) => i,
            None => {
                self.slots.push((ActFormat::F32, Vec::new()));
                self.slots.len() - 1
            }
        };
        let (held, rows) = &mut self.slots[slot];
        *held = format;
        if rows.len() < t {
            rows.resize_with(t, QuantizedActs::new);
        }
        Some(&mut rows[..t])
    }

    /// The rows held for `format`.
    fn rows(&self, format: ActFormat) -> &[QuantizedActs] {
        let slot = self
            .slots
            .iter()
            .find(|s| s.0 == format)
            // OK because callers prepare every format before asking.
            .expect("activation format prepared");
        &slot.1[..self.t]
    }

    /// The input for products with `lin` ([`ActsCache::prepare`]d for its format).
    pub fn acts<'x>(&'x self, lin: &Linear<'_>, x: &'x [f32]) -> Acts<'x> {
        let quantized = match lin.act_format() {
            None => &[][..],
            Some(f) => self.rows(f),
        };
        Acts { f32: x, quantized }
    }
}

/// Rows of `x` (`[rows.len(), cols]`) to quantize into `rows` in `format`.
pub(crate) struct QuantRequest<'a> {
    pub rows: &'a mut [QuantizedActs],
    pub format: ActFormat,
    pub x: &'a [f32],
    pub cols: usize,
}

/// Rows per task of a parallel quantization.
const QUANT_ROWS_PER_TASK: usize = 16;

/// Whether quantizing `values` activations is worth a parallel step (prefill) rather than
/// this thread alone (decode: a hand-off costs more than a few rows).
pub(crate) fn quantize_in_parallel(values: usize, threads: usize) -> bool {
    threads > 1 && values >= PARALLEL_MIN_WORK / 4
}

/// Carries out every request, as one parallel step over chunks of rows when the rows are
/// many (prefill), on this thread otherwise (a hand-off costs more than a few rows).
pub(crate) fn quantize_rows(requests: &mut [QuantRequest<'_>], threads: usize) {
    let quantize = |rows: &mut [QuantizedActs], format: ActFormat, x: &[f32], cols: usize| {
        for (a, xr) in rows.iter_mut().zip(x.chunks_exact(cols)) {
            a.quantize(format, xr)
                // OK because every quantized weight's `cols` is whole blocks of its type, and
                // every type's activation blocks are as long as its own (checked at load).
                .expect("activation row is whole blocks");
        }
    };
    let values: usize = requests.iter().map(|r| r.rows.len() * r.cols).sum();
    if !quantize_in_parallel(values, threads) {
        for r in requests.iter_mut() {
            quantize(r.rows, r.format, r.x, r.cols);
        }
        return;
    }
    let mut chunks: Vec<QuantRequest<'_>> = Vec::new();
    for r in requests.iter_mut() {
        let (format, cols) = (r.format, r.cols);
        for (rows, x) in r
            .rows
            .chunks_mut(QUANT_ROWS_PER_TASK)
            .zip(r.x.chunks(QUANT_ROWS_PER_TASK * cols))
        {
            chunks.push(QuantRequest {
                rows,
                format,
                x,
                cols,
            });
        }
    }
    ThreadPool::global(threads).for_each_chunk_mut(&mut chunks, 1, |_, c| {
        for r in c {
            quantize(r.rows, r.format, r.x, r.cols);
        }
    });
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

    /// Elements of the output.
    pub fn len(&self) -> usize {
        self.len
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

/// Work items per thread of a parallel step ([`ItemPlan`]): enough that a thread finishing
/// early can take over the end of another's share in small pieces (the other thread's last
/// item is the most it waits), few enough that the per-item cost (a kernel call, its checks)
/// stays small against a decode step's microseconds. (16 per thread cut the threads' waits
/// for each other at the ends of the steps by a third on the scaled DeepSeek model, two
/// threads, but decode was 2–4% slower than with 8: the waits saved were less than the items
/// cost.)
const ITEMS_PER_THREAD: usize = 8;

/// The smallest item worth a kernel call of its own ([`ItemPlan`]), in weight bytes: a
/// microsecond of reading, against a call's fraction of one.
const MIN_ITEM_BYTES: usize = 32 << 10;

/// The size of a step for [`run_items`]' hand-off test: its multiply-adds, or twice the
/// weight bytes it reads if that is more. A one-token product is bound by its reads: an f32
/// router of 64 × 1024 (65 k multiply-adds, 256 KiB) takes about 10 µs from DRAM on one core
/// and is worth splitting, while a Q4_K matrix with as many multiply-adds (37 KiB) is not.
pub(crate) fn step_work(macs: usize, bytes: usize) -> usize {
    macs.max(2 * bytes)
}

/// How a parallel step's jobs (products, or MLPs) split into work items `(job, block of
/// rows)`: every job's rows in order, in blocks of about equal cost (whole tiles; a job's last
/// block takes the rest), the jobs one after another. That is the order in which the weights
/// lie in memory, and [`run_items`] hands the items out with
/// [`ThreadPool::parallel_for_streams`]: each thread runs a contiguous run of them, i.e.
/// reads one sequential stream of weights as a single thread does. (Handing consecutive items
/// to alternate threads made each thread's reads hop every item; the hardware prefetchers
/// restart on each hop, and short decode steps ran no faster on two threads than on one.)
/// One thread: one item per job.
///
/// A row's cost is its weight bytes (decode streams them; in prefill they also track the
/// multiply-adds of one type). Blocks of equal *rows* were unequal work when the jobs' rows
/// differ in length: a MoE layer's shared-expert `down` has rows twice as long as a routed
/// expert's, so the thread whose share held it finished last, and the other waited up to one
/// of its (double) items at every layer.
#[derive(Debug)]
pub(crate) struct ItemPlan {
    /// `(rows, rows per item)` of each job; on the stack for a decode step's few jobs.
    jobs: SmallVec<[(usize, usize); 16]>,
    total: usize,
}

impl ItemPlan {
    /// Items for jobs of `(rows, bytes per row)`, to be shared by `threads` threads.
    pub fn new(jobs: impl IntoIterator<Item = (usize, usize)>, threads: usize) -> Self {
        let sizes: SmallVec<[(usize, usize); 16]> = jobs.into_iter().collect();
        let all: usize = sizes.iter().map(|&(rows, cost)| rows * cost.max(1)).sum();
        // The cost of one item: a thread's share in ITEMS_PER_THREAD pieces, unless that is
        // too small to be worth a call.
        let target = all
            .div_ceil(ITEMS_PER_THREAD * threads.max(1))
            .max(MIN_ITEM_BYTES);
        let jobs: SmallVec<[(usize, usize); 16]> = sizes
            .iter()
            .map(|&(rows, cost)| {
                let grain = if threads <= 1 {
                    rows
                } else {
                    target.div_ceil(cost.max(1)).div_ceil(ROW_ALIGN) * ROW_ALIGN
                };
                (rows, grain.max(1))
            })
            .collect();
        let total = jobs.iter().map(|&(rows, grain)| rows.div_ceil(grain)).sum();
        ItemPlan { jobs, total }
    }

    /// Items in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Items of job `j`.
    pub fn job_items(&self, j: usize) -> usize {
        let (rows, grain) = self.jobs[j];
        rows.div_ceil(grain)
    }

    /// Item `k`'s job and rows (`k < total`).
    pub fn item(&self, k: usize) -> (usize, Range<usize>) {
        let mut k = k;
        for (j, &(rows, grain)) in self.jobs.iter().enumerate() {
            let n = rows.div_ceil(grain);
            if k < n {
                return (j, k * grain..((k + 1) * grain).min(rows));
            }
            k -= n;
        }
        unreachable!("item index below the total")
    }
}

/// Run `item(job, rows)` for every item of `plan`, as one parallel step over up to `threads`
/// threads (serially on this thread when the step's `work` ([`step_work`]) is too little to be
/// worth a hand-off).
pub(crate) fn run_items(
    threads: usize,
    work: usize,
    plan: &ItemPlan,
    item: impl Fn(usize, Range<usize>) + Sync,
) {
    let total = plan.total();
    if threads <= 1 || work < PARALLEL_MIN_WORK || total <= 1 {
        (0..total).for_each(|k| {
            let (job, rows) = plan.item(k);
            item(job, rows)
        });
        return;
    }
    ThreadPool::global(threads).parallel_for_streams(total, |k| {
        let (job, rows) = plan.item(k);
        item(job, rows)
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
                cache.prepare_par(f, x, cols, threads);
            }
        }
        let cache = &*cache;
        let macs: usize = lins.iter().map(|l| t * l.rows() * cols).sum();
        let bytes: usize = lins.iter().map(|l| l.stored_bytes()).sum();
        let work = step_work(macs, bytes);
        let plan = ItemPlan::new(lins.iter().map(|l| (l.rows(), l.row_bytes())), threads);
        let shared: SmallVec<[SharedOut; 4]> = outs.iter_mut().map(|o| SharedOut::new(o)).collect();
        run_items(threads, work, &plan, |j, rows| {
            let lin = lins[j];
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of every job is in exactly one item; every item but a job's last starts and
    /// ends on whole tiles and costs about a thread's share over ITEMS_PER_THREAD, or
    /// MIN_ITEM_BYTES if more (at least that, less than one tile more), whatever the job's
    /// bytes per row; the item count stays about ITEMS_PER_THREAD per thread; one thread gets
    /// one item per job.
    #[test]
    fn item_plan_covers_each_row_once_in_memory_order_in_items_of_equal_cost() {
        for threads in [1, 2, 3, 8] {
            for jobs in [
                vec![(4096, 576)],
                vec![(512, 288); 6],
                // A MoE layer's down projections: six routed experts and the shared ones,
                // whose rows are twice as long.
                vec![(1024, 420), (1024, 420), (1024, 420), (1024, 840)],
                vec![(1536, 576), (576, 576)],
                vec![(100, 34), (7, 210), (1, 1), (0, 144), (333, 144)],
                vec![(102_400, 4096)],
            ] {
                let plan = ItemPlan::new(jobs.iter().copied(), threads);
                let rows: Vec<usize> = jobs.iter().map(|j| j.0).collect();
                let all: usize = jobs.iter().map(|&(r, c)| r * c).sum();
                let target = all.div_ceil(ITEMS_PER_THREAD * threads).max(MIN_ITEM_BYTES);
                let mut seen: Vec<Vec<u32>> = rows.iter().map(|&r| vec![0; r]).collect();
                // The next row each item must start at: the items walk the jobs in order.
                let mut at = (0, 0);
                for k in 0..plan.total() {
                    let (j, r) = plan.item(k);
                    assert!(!r.is_empty(), "{jobs:?}/{threads}: item {k} empty");
                    while at.0 < j {
                        assert_eq!(at.1, rows[at.0], "{jobs:?}/{threads}: job {} left", at.0);
                        at = (at.0 + 1, 0);
                    }
                    assert_eq!(r.start, at.1, "{jobs:?}/{threads}: item {k} {r:?}");
                    at.1 = r.end;
                    assert_eq!(r.start % ROW_ALIGN, 0, "{jobs:?}/{threads}: item {k} {r:?}");
                    let last = r.end == rows[j];
                    assert!(
                        r.end % ROW_ALIGN == 0 || last,
                        "{jobs:?}/{threads}: item {k} {r:?}"
                    );
                    if threads > 1 && !last {
                        let cost = r.len() * jobs[j].1;
                        assert!(
                            cost >= target && cost < target + ROW_ALIGN * jobs[j].1,
                            "{jobs:?}/{threads}: item {k} {r:?} costs {cost}, target {target}"
                        );
                    }
                    r.for_each(|i| seen[j][i] += 1);
                }
                assert!(seen.iter().flatten().all(|&c| c == 1), "{jobs:?}/{threads}");
                let n_jobs = rows.iter().filter(|&&r| r > 0).count();
                if threads == 1 {
                    assert_eq!(plan.total(), n_jobs);
                } else {
                    // About ITEMS_PER_THREAD per thread, plus at most one short item per job.
                    let most = ITEMS_PER_THREAD * threads + n_jobs;
                    assert!(plan.total() <= most, "{jobs:?}/{threads}: {}", plan.total());
                }
            }
        }
    }

    /// The parallel quantization (chunks of rows over the pool, several requests at once) and
    /// the gather of a row subset give each row exactly the bytes of quantizing it alone.
    #[test]
    fn parallel_quantization_and_gather_equal_per_row_quantization() {
        let (t, cols) = (203, 512);
        let x: Vec<f32> = (0..t * cols)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3)
            .collect();
        let alone = |f: ActFormat, row: &[f32]| QuantizedActs::from_f32(f, row).unwrap();
        for threads in [1, 2, 3] {
            let (mut a, mut b) = (ActsCache::default(), ActsCache::default());
            let mut reqs = vec![
                QuantRequest {
                    rows: a.reserve(ActFormat::Q8K, t).unwrap(),
                    format: ActFormat::Q8K,
                    x: &x,
                    cols,
                },
                QuantRequest {
                    rows: b.reserve(ActFormat::Q8_0, t).unwrap(),
                    format: ActFormat::Q8_0,
                    x: &x,
                    cols,
                },
            ];
            quantize_rows(&mut reqs, threads);
            for (f, cache) in [(ActFormat::Q8K, &a), (ActFormat::Q8_0, &b)] {
                for (r, got) in cache.rows(f).iter().enumerate() {
                    let want = alone(f, &x[r * cols..(r + 1) * cols]);
                    assert_eq!(
                        got.as_bytes(),
                        want.as_bytes(),
                        "{f:?} row {r}, {threads} threads"
                    );
                }
            }
            let pick = [3usize, 4, 100, 202];
            let mut g = ActsCache::default();
            g.gather(&a, ActFormat::Q8K, &pick);
            for (got, &r) in g.rows(ActFormat::Q8K).iter().zip(&pick) {
                let want = alone(ActFormat::Q8K, &x[r * cols..(r + 1) * cols]);
                assert_eq!(got.as_bytes(), want.as_bytes(), "gathered row {r}");
            }
        }
    }
}
