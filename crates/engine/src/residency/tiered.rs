//! The expert cache with a low-bit fallback tier (`--expert-fallback`): a second
//! [`ExpertCache`] over a lower-bit GGUF of the same model, so that a full-precision miss need
//! not stall.
//!
//! On a request, each expert is served from
//! - the full-precision tier if it is resident there (exact);
//! - else its low-bit copy if that is resident: computed with at once (no wait), while the
//!   full-precision read is queued in the background, so later uses are exact again;
//! - else the full-precision tier, read on demand as without a fallback (the stall), while the
//!   low-bit copy is queued into the low tier for the next time it misses.
//!
//! The two tiers have their own slots (the low tier's sized for the largest low-bit expert) and
//! their own LRU. A low-bit copy changes the logits by the quantization error of its type
//! (measured in `crates/engine/tests/expert_fallback.rs` and the README).

use std::sync::atomic::{AtomicU64, Ordering};

use frugal_model::blocks::experts::{ExpertBytes, ExpertStore};

use super::cache::ExpertCache;
use super::stats::{CacheStats, LowTierStats};

/// An [`ExpertStore`] of two tiers: full precision and a low-bit fallback (module doc).
#[derive(Debug)]
pub struct TieredCache<'a> {
    full: ExpertCache<'a>,
    low: ExpertCache<'a>,
    fallback_uses: AtomicU64,
}

/// Which tier serves a requested expert, and its index in that tier's request.
#[derive(Clone, Copy)]
enum Tier {
    Full(usize),
    Low(usize),
}

impl<'a> TieredCache<'a> {
    /// Two tiers over the same model's routed experts: `full` over the model file, `low` over
    /// the low-bit file (its experts must name their types: [`ExpertBytes::dtypes`]).
    pub fn new(full: ExpertCache<'a>, low: ExpertCache<'a>) -> Self {
        TieredCache {
            full,
            low,
            fallback_uses: AtomicU64::new(0),
        }
    }

    /// The full-precision tier.
    pub fn full(&self) -> &ExpertCache<'a> {
        &self.full
    }

    /// Both tiers' counters: the full tier's, with the low tier's in
    /// [`CacheStats::low_tier`].
    pub fn stats(&self) -> CacheStats {
        let low = self.low.stats();
        CacheStats {
            low_tier: Some(LowTierStats {
                fallback_uses: self.fallback_uses.load(Ordering::Relaxed),
                hits: low.hits,
                reads: low.misses + low.prefetch_reads,
                bytes_read: low.bytes_read,
                resident_experts: low.resident_experts,
                capacity_bytes: low.capacity_bytes,
                slots: low.slots,
            }),
            ..self.full.stats()
        }
    }
}

impl ExpertStore for TieredCache<'_> {
    fn with_experts(&self, layer: usize, experts: &[usize], f: &mut dyn FnMut(&[ExpertBytes<'_>])) {
        let (mut full, mut low, mut fill_low) = (Vec::new(), Vec::new(), Vec::new());
        let from: Vec<Tier> = experts
            .iter()
            .map(|&e| {
                if !self.full.is_resident(layer, e) && self.low.is_resident(layer, e) {
                    low.push(e);
                    Tier::Low(low.len() - 1)
                } else {
                    if !self.full.is_resident(layer, e) {
                        fill_low.push(e);
                    }
                    full.push(e);
                    Tier::Full(full.len() - 1)
                }
            })
            .collect();
        self.fallback_uses
            .fetch_add(low.len() as u64, Ordering::Relaxed);
        self.full.with_experts(layer, &full, &mut |fb| {
            self.low.with_experts(layer, &low, &mut |lb| {
                // Queued while this request's experts are pinned in both tiers, so the
                // background reads cannot evict them.
                if !low.is_empty() {
                    self.full.prefetch(layer, &low);
                }
                if !fill_low.is_empty() {
                    self.low.prefetch(layer, &fill_low);
                }
                let bytes: Vec<ExpertBytes<'_>> = from
                    .iter()
                    .map(|&w| match w {
                        Tier::Full(i) => fb[i],
                        Tier::Low(i) => lb[i],
                    })
                    .collect();
                f(&bytes);
            });
        });
    }

    fn prefetch(&self, layer: usize, experts: &[usize]) {
        self.full.prefetch(layer, experts);
    }

    fn wants_prefetch(&self) -> bool {
        self.full.wants_prefetch()
    }
}
