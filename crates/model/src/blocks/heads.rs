//! Attention heads are independent: compute ranges of them on several threads (the shared
//! [`ThreadPool`]), each range writing its `[t, heads, d]` block straight into its columns of
//! the `[t, n_heads, d]` output. Shared by GQA and MLA.

use std::ops::Range;

use frugal_kernels::pool::ThreadPool;

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
