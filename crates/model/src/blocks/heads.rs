//! Attention heads are independent: compute ranges of them on several threads (the shared
//! [`ThreadPool`]), each range writing its `[t, heads, d]` block straight into its columns of
//! the `[t, n_heads, d]` output. Shared by GQA and MLA.

use std::ops::Range;

use frugal_kernels::pool::ThreadPool;
use frugal_kernels::softmax;

use super::linear::PARALLEL_MIN_WORK;
use super::products::SharedOut;

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
        scores.iter_mut().for_each(|x| *x *= scale);
        let m = scores.iter().copied().fold(self.max, f32::max);
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
