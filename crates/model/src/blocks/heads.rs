//! Attention heads are independent: compute ranges of them on several threads (the shared
//! [`ThreadPool`]) and interleave
//! the results back into `[t, n_heads, d]`. Shared by GQA and MLA.

use std::ops::Range;

use frugal_kernels::pool::ThreadPool;

use super::linear::PARALLEL_MIN_WORK;

/// Runs `attend(heads)` (returning `[t, heads.len(), d]`) over all `n` heads, split into ranges
/// over up to `threads` threads when `work` (multiply-adds) is large enough, and returns
/// `[t, n, d]`. Each head's output does not depend on the split.
pub(crate) fn for_head_ranges<F>(
    n: usize,
    t: usize,
    d: usize,
    work: usize,
    threads: usize,
    attend: F,
) -> Vec<f32>
where
    F: Fn(Range<usize>) -> Vec<f32> + Sync,
{
    let pool = ThreadPool::global(threads);
    let threads = if work < PARALLEL_MIN_WORK {
        1
    } else {
        threads.clamp(1, n.max(1))
    };
    if threads == 1 {
        return attend(0..n);
    }
    let per = n.div_ceil(threads);
    let ranges: Vec<Range<usize>> = (0..threads)
        .map(|i| (i * per).min(n)..((i + 1) * per).min(n))
        .filter(|r| !r.is_empty())
        .collect();
    let parts: Vec<(usize, Vec<f32>)> = pool.map(ranges.len(), |i| {
        let r = ranges[i].clone();
        (r.start, attend(r))
    });
    // Each part is [t, heads in its range, d]; place it into [t, n, d].
    let mut out = vec![0.0f32; t * n * d];
    for (h0, part) in &parts {
        let nh = part.len() / (t * d).max(1);
        for i in 0..t {
            let dst = (i * n + h0) * d;
            out[dst..dst + nh * d].copy_from_slice(&part[i * nh * d..(i + 1) * nh * d]);
        }
    }
    out
}
