//! The expert cache's counters ([`CacheStats`]): what `frugal run --stats` and `frugal bench`
//! print.

use serde::Serialize;

/// Counters of an expert cache ([`super::cache::ExpertCache`]) since it was made.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CacheStats {
    /// Requested experts found resident (or already being read by a prefetch).
    pub hits: u64,
    /// Requested experts read on demand.
    pub misses: u64,
    /// Hits on experts a prefetch brought in (a subset of `hits`).
    pub prefetch_hits: u64,
    /// Experts read because of a prefetch hint.
    pub prefetch_reads: u64,
    /// Residents evicted to make room.
    pub evictions: u64,
    /// Misses read into a temporary buffer because every slot was pinned.
    pub overflow_reads: u64,
    /// Reads that failed and were served from the mapped file instead.
    pub fallbacks: u64,
    /// Expert bytes read from the file (demand and prefetch; the matrices' own bytes, not
    /// the aligned supersets).
    pub bytes_read: u64,
    /// Wall time during which at least one read was in flight.
    pub read_seconds: f64,
    /// Time requests waited for reads (the computation stalled).
    pub stall_seconds: f64,
    /// Bytes of the experts resident now.
    pub resident_bytes: u64,
    /// Experts resident now.
    pub resident_experts: u64,
    /// The slots' total size (the cache's memory bound).
    pub capacity_bytes: u64,
    /// Number of slots.
    pub slots: u64,
    /// Whether reads bypass the page cache (`O_DIRECT`).
    pub direct_io: bool,
}

impl CacheStats {
    /// `hits / (hits + misses)`, 0 before any request.
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }

    /// Read throughput in GB/s (10⁹ bytes) over the time reads were in flight.
    pub fn read_gbps(&self) -> f64 {
        if self.read_seconds > 0.0 {
            self.bytes_read as f64 / self.read_seconds / 1e9
        } else {
            0.0
        }
    }

    /// The counters accumulated since `earlier` (a snapshot of the same cache); the
    /// resident and capacity figures are this snapshot's.
    pub fn since(&self, earlier: &CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits - earlier.hits,
            misses: self.misses - earlier.misses,
            prefetch_hits: self.prefetch_hits - earlier.prefetch_hits,
            prefetch_reads: self.prefetch_reads - earlier.prefetch_reads,
            evictions: self.evictions - earlier.evictions,
            overflow_reads: self.overflow_reads - earlier.overflow_reads,
            fallbacks: self.fallbacks - earlier.fallbacks,
            bytes_read: self.bytes_read - earlier.bytes_read,
            read_seconds: self.read_seconds - earlier.read_seconds,
            stall_seconds: self.stall_seconds - earlier.stall_seconds,
            ..*self
        }
    }

    /// A few lines for people: hit rate, reads, stall.
    pub fn summary(&self) -> String {
        format!(
            "expert cache: {:.1}% hits ({} hits, {} misses, {} prefetch hits of {} prefetched), {} evictions, {} overflow reads, {} fallbacks\n\
             expert reads: {:.2} GB in {:.2} s ({:.2} GB/s{}), stall {:.2} s\n\
             resident: {} experts, {:.2} GB of {:.2} GB ({} slots)",
            100.0 * self.hit_rate(),
            self.hits,
            self.misses,
            self.prefetch_hits,
            self.prefetch_reads,
            self.evictions,
            self.overflow_reads,
            self.fallbacks,
            self.bytes_read as f64 / 1e9,
            self.read_seconds,
            self.read_gbps(),
            if self.direct_io { ", direct I/O" } else { ", buffered" },
            self.stall_seconds,
            self.resident_experts,
            self.resident_bytes as f64 / 1e9,
            self.capacity_bytes as f64 / 1e9,
            self.slots,
        )
    }
}
