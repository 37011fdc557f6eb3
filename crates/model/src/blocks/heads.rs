//! Attention heads are independent: compute ranges of them on several threads (the shared
//! [`ThreadPool`]), each range writing its `[t, heads, d]` block straight into its columns of
//! the `[t, n_heads, d]` output. Or, for one query over a deep cache, split the cached
//! positions instead ([`attend_split`]). Shared by GQA and MLA.

use std::cell::RefCell;
use std::ops::Range;

use frugal_kernels::pool::ThreadPool;
use frugal_kernels::softmax;

use super::linear::PARALLEL_MIN_WORK;
use super::products::SharedOut;
use super::with_local;

/// Runs `attend(heads, block)` over all `n` heads, split into ranges over up to `threads`
/// threads when `work` (multiply-adds) is large enough; `attend` fills `block`
/// (`[t, heads.len(), d]`), which lands in `out` (`[t, n, d]`). Each head's output does not
/// depend on the split.
pub(crate) fn for_head_ranges<F>(
    n: usize,
    t: usize,
    d: usize,
    work: usize,
    threads: usize,
    out: &mut [f32],
    attend: F,
) where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    assert_eq!(out.len(), t * n * d, "for_head_ranges: output length");
    let threads = if work < PARALLEL_MIN_WORK {
        1
    } else {
        threads.clamp(1, n.max(1))
    };
    if threads == 1 {
        attend(0..n, out);
        return;
    }
    let per = n.div_ceil(threads);
    let shared = SharedOut::new(out);
    ThreadPool::global(threads).parallel_for(n.div_ceil(per), |i| {
        let heads = i * per..((i + 1) * per).min(n);
        // SAFETY: ranges are disjoint, so each task writes its own columns
        // `heads.start * d..heads.end * d` of every row of `out`, borrowed for the whole call.
        unsafe {
            shared.write_block(t, heads.len() * d, heads.start * d, n * d, |block, _| {
                attend(heads.clone(), block)
            })
        };
    });
}

/// One attention row's online-softmax state over the cached positions it has seen so far:
/// the running maximum of its scaled scores and the sum of `exp(score − max)`. Attention over
/// a cache in blocks ([`Running::absorb`] per block, [`Running::finish`] at the end) then
/// reads each block once and equals one softmax over the whole context, summed in another
/// order (the `mla::absorbed` module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Running {
    /// The largest scaled score so far (`−∞`: none seen).
    pub max: f32,
    /// `Σ exp(score − max)` over those positions.
    pub sum: f64,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            max: f32::NEG_INFINITY,
            sum: 0.0,
        }
    }
}

impl Running {
    /// Takes in one block of the row's raw scores: scales them by `scale` and replaces them by
    /// `exp(score − m')`, the weights of the block's values, where `m'` is the maximum with
    /// them included. A block that raises the maximum first scales the sum and the row's
    /// unnormalised output `o` (the weighted values added so far) by `exp(m − m')`. The
    /// caller then adds the block's weighted values to `o`.
    pub fn absorb(&mut self, scores: &mut [f32], scale: f32, o: &mut [f32]) {
        let m = softmax::scale_max(scores, scale, self.max);
        let block_sum = softmax::exp_sub_sum(scores, m);
        // A row that has seen nothing yet has a zero output and sum: nothing to scale.
        if m > self.max && self.max > f32::NEG_INFINITY {
            let f = (self.max - m).exp();
            self.sum *= f as f64;
            o.iter_mut().for_each(|v| *v *= f);
        }
        self.sum += block_sum;
        self.max = m;
    }

    /// Divides the row's output by the sum: `Σ_s softmax(score)_s v_s`.
    pub fn finish(&self, o: &mut [f32]) {
        let inv = (1.0 / self.sum) as f32;
        o.iter_mut().for_each(|v| *v *= inv);
    }
}

/// [`attend_split`]'s buffers, on the calling thread.
#[derive(Debug, Default)]
struct SplitScratch {
    /// `[shares, n, d]`: each share's unnormalised outputs.
    partial: Vec<f32>,
    /// `[shares, n, 2]`: each share's online-softmax state per row (maximum, sum).
    stats: Vec<f32>,
}

thread_local! {
    static SPLIT: RefCell<SplitScratch> = RefCell::new(SplitScratch::default());
    /// A share's states, on the thread that attends it.
    static SHARE: RefCell<Vec<Running>> = const { RefCell::new(Vec::new()) };
}

/// One query's attention, `n` rows (heads) of `d` values each, over the cached `positions`
/// split between up to `threads` threads by position, into `out` `[n, d]`.
///
/// The positions go in shares of whole `block`s (the last takes the rest; `positions.start`
/// is a block edge), one per thread: `attend(share, o, running)` adds each row's online
/// softmax over the share's positions to its unnormalised output (`o` `[n, d]`, zeroed) and
/// its [`Running`] state (fresh). The shares then merge as `o = Σ_c e^{m_c − M} o_c / Σ_c
/// e^{m_c − M} l_c` with `M = max_c m_c`: each thread reads only its share of the cache, once
/// for all rows, where a split by head has every thread read all of it for a few heads.
pub(crate) fn attend_split<F>(
    n: usize,
    d: usize,
    positions: Range<usize>,
    block: usize,
    threads: usize,
    out: &mut [f32],
    attend: F,
) where
    F: Fn(Range<usize>, &mut [f32], &mut [Running]) + Sync,
{
    assert_eq!(out.len(), n * d, "attend_split: output length");
    let blocks = positions.len().div_ceil(block).max(1);
    let per = blocks.div_ceil(threads.clamp(1, blocks)) * block;
    let shares = positions.len().div_ceil(per).max(1);
    with_local(&SPLIT, |sp| {
        let SplitScratch { partial, stats } = sp;
        partial.resize(shares * n * d, 0.0);
        stats.resize(shares * n * 2, 0.0);
        let (partial_out, stats_out) = (SharedOut::new(partial), SharedOut::new(stats));
        ThreadPool::global(threads).parallel_for(shares, |c| {
            let start = positions.start + c * per;
            let share = start..(start + per).min(positions.end);
            // SAFETY: share `c` writes only its own rows of `partial` and `stats`, which stay
            // borrowed until the step ends.
            let (o, st) = unsafe {
                (
                    partial_out.slice(c * n * d..(c + 1) * n * d),
                    stats_out.slice(c * n * 2..(c + 1) * n * 2),
                )
            };
            o.fill(0.0);
            with_local(&SHARE, |running| {
                running.clear();
                running.resize(n, Running::default());
                attend(share, o, running);
                for (st, r) in st.chunks_exact_mut(2).zip(running.iter()) {
                    st[0] = r.max;
                    st[1] = r.sum as f32;
                }
            })
        });
        out.fill(0.0);
        for (h, row) in out.chunks_exact_mut(d).enumerate() {
            let m = (0..shares)
                .map(|c| stats[(c * n + h) * 2])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for c in 0..shares {
                let (mc, lc) = (stats[(c * n + h) * 2], stats[(c * n + h) * 2 + 1]);
                if mc == f32::NEG_INFINITY {
                    continue;
                }
                let w = (mc - m).exp();
                sum += (w * lc) as f64;
                let oc = &partial[(c * n + h) * d..(c * n + h + 1) * d];
                row.iter_mut().zip(oc).for_each(|(o, &x)| *o += w * x);
            }
            Running { max: m, sum }.finish(row);
        }
    })
}
