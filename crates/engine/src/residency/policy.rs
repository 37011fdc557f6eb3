//! Expert-cache simulation: replay a [`RoutingTrace`] against a cache of fixed capacity and
//! count hits, misses and bytes read.
//!
//! Accesses are replayed in decode order: token by token, and within a token MoE layer by
//! layer, each chosen expert once. (A real prefill runs each layer over a whole chunk of tokens
//! at once, so it reads a chunk's distinct experts once per layer; the decode order is the
//! pessimistic one, and the one that matters when generating.) The cache starts empty: the
//! first use of every expert is a miss.
//!
//! An expert is identified by `(MoE layer, expert id)`. On a miss its bytes are read; if it
//! fits at all, residents are evicted until it does, and it is kept. An expert larger than the
//! whole capacity (or its layer's share) is read and not kept. Policies differ in whom they
//! evict:
//!
//! - [`Policy::Lru`]: the least recently used expert, over all layers.
//! - [`Policy::Lfu`]: the least frequently used, counting every use since the start of the
//!   trace (also while not resident), ties broken by least recent use.
//! - [`Policy::PerLayerLru`]: each MoE layer gets an equal share of the capacity (rounded
//!   down) and runs LRU within it, so one busy layer cannot push out another's experts.
//! - [`Policy::Belady`]: the expert whose next use is farthest in the future (never used again
//!   first). It needs the future, so no engine can run it; with equal expert sizes it is the
//!   optimum (Belady 1966), the bound the others are measured against.

use std::collections::BTreeSet;

use serde::Serialize;

use super::trace::RoutingTrace;

/// An eviction policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Least recently used, one pool for all layers.
    Lru,
    /// Least frequently used (whole-trace counts), ties by least recent use.
    Lfu,
    /// LRU within an equal per-layer share of the capacity.
    PerLayerLru,
    /// Farthest next use (offline bound).
    Belady,
}

impl Policy {
    /// Every policy, in the order reports list them.
    pub const ALL: [Policy; 4] = [
        Policy::Lru,
        Policy::Lfu,
        Policy::PerLayerLru,
        Policy::Belady,
    ];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
            Policy::PerLayerLru => "per-layer lru",
            Policy::Belady => "belady (bound)",
        }
    }
}

/// A cache size, as the user gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Capacity {
    /// A fraction (0, 1] of the bytes of all routed experts of all MoE layers (`25%`).
    Fraction(f64),
    /// Bytes (`4G`, `512M`, `64K`, `1000B`; binary multiples).
    Bytes(u64),
    /// A number of experts, whatever their size (`40`).
    Experts(u64),
}

impl Capacity {
    /// Parses `25%`, `4G`/`512M`/`64K`/`1000B` (also `GB`, `GiB`, ...; powers of 1024) or a
    /// plain expert count.
    pub fn parse(s: &str) -> Result<Capacity, String> {
        let t = s.trim();
        let err = || {
            format!(
                "cache capacity {s:?} is not a percentage (25%), a byte size (4G, 512M, 64K, 1000B) or an expert count (40)"
            )
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| err())?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!(
                    "cache capacity {s:?}: a percentage must be in (0, 100]"
                ));
            }
            return Ok(Capacity::Fraction(v / 100.0));
        }
        let upper = t.to_ascii_uppercase();
        let num_end = upper
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(upper.len());
        let (num, unit) = upper.split_at(num_end);
        if num.is_empty() {
            return Err(err());
        }
        let mult: Option<u64> = match unit.trim() {
            "" => None,
            "B" => Some(1),
            "K" | "KB" | "KIB" => Some(1 << 10),
            "M" | "MB" | "MIB" => Some(1 << 20),
            "G" | "GB" | "GIB" => Some(1 << 30),
            "T" | "TB" | "TIB" => Some(1 << 40),
            _ => return Err(err()),
        };
        match mult {
            None => {
                let n: u64 = num.parse().map_err(|_| err())?;
                if n == 0 {
                    return Err(format!("cache capacity {s:?}: must be at least 1 expert"));
                }
                Ok(Capacity::Experts(n))
            }
            Some(m) => {
                let v: f64 = num.parse().map_err(|_| err())?;
                let bytes = (v * m as f64) as u64;
                if bytes == 0 {
                    return Err(format!("cache capacity {s:?}: must be more than 0 bytes"));
                }
                Ok(Capacity::Bytes(bytes))
            }
        }
    }
}

/// What one simulation measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimResult {
    /// The policy.
    pub policy: Policy,
    /// The capacity in `unit`s.
    pub capacity: u64,
    /// `"bytes"` or `"experts"`.
    pub unit: &'static str,
    /// Expert uses replayed.
    pub accesses: u64,
    /// Uses that found the expert resident.
    pub hits: u64,
    /// Bytes read for misses (every miss reads the whole expert).
    pub bytes_read: u64,
    /// Bytes the uses would read with no cache at all (each use reads its expert).
    pub bytes_uncached: u64,
}

impl SimResult {
    /// `hits / accesses` (0 for an empty trace).
    pub fn hit_rate(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            self.hits as f64 / self.accesses as f64
        }
    }
}

/// A pool of resident experts ordered by eviction priority: the smallest `(a, b, key)` goes
/// first. `prio[key]` is the resident's current entry, `None` when not resident.
struct Pool {
    cap: u64,
    used: u64,
    order: BTreeSet<(u64, u64, usize)>,
    prio: Vec<Option<(u64, u64)>>,
}

impl Pool {
    fn new(cap: u64, keys: usize) -> Self {
        Pool {
            cap,
            used: 0,
            order: BTreeSet::new(),
            prio: vec![None; keys],
        }
    }

    /// Uses `key` (of `size`, sizes by key in `sizes`) with eviction priority `p`; whether it
    /// was resident.
    fn access(&mut self, key: usize, sizes: &[u64], p: (u64, u64)) -> bool {
        if let Some(old) = self.prio[key] {
            self.order.remove(&(old.0, old.1, key));
            self.order.insert((p.0, p.1, key));
            self.prio[key] = Some(p);
            return true;
        }
        let size = sizes[key];
        if size > self.cap {
            return false;
        }
        while self.used + size > self.cap {
            // OK because used > 0 means something is resident.
            let (_, _, victim) = self.order.pop_first().expect("a resident to evict");
            self.used -= sizes[victim];
            self.prio[victim] = None;
        }
        self.order.insert((p.0, p.1, key));
        self.prio[key] = Some(p);
        self.used += size;
        false
    }
}

/// Replays `trace` against a cache of `capacity` under `policy`.
pub fn simulate(trace: &RoutingTrace, policy: Policy, capacity: Capacity) -> SimResult {
    let (n_layers, e) = (trace.layers.len(), trace.num_experts);
    let keys = n_layers * e;
    // Key of (layer i, expert x) = i·E + x.
    let (sizes, cap, unit): (Vec<u64>, u64, &'static str) = match capacity {
        Capacity::Experts(n) => (vec![1; keys], n, "experts"),
        Capacity::Bytes(b) => (trace.expert_bytes.concat(), b, "bytes"),
        Capacity::Fraction(f) => (
            trace.expert_bytes.concat(),
            (f * trace.total_expert_bytes() as f64) as u64,
            "bytes",
        ),
    };
    let bytes: Vec<u64> = trace.expert_bytes.concat();
    let accesses: Vec<usize> = trace
        .tokens
        .iter()
        .flat_map(|tok| {
            tok.iter()
                .enumerate()
                .flat_map(move |(i, xs)| xs.iter().map(move |&x| i * e + x as usize))
        })
        .collect();
    // Belady: the index of each access's key's next use (u64::MAX: none).
    let next_use: Vec<u64> = if policy == Policy::Belady {
        let mut next = vec![u64::MAX; accesses.len()];
        let mut seen = vec![u64::MAX; keys];
        for (t, &k) in accesses.iter().enumerate().rev() {
            next[t] = seen[k];
            seen[k] = t as u64;
        }
        next
    } else {
        Vec::new()
    };
    let mut pools: Vec<Pool> = if policy == Policy::PerLayerLru {
        (0..n_layers)
            .map(|_| Pool::new(cap / n_layers as u64, keys))
            .collect()
    } else {
        vec![Pool::new(cap, keys)]
    };
    let mut freq = vec![0u64; keys];
    let mut out = SimResult {
        policy,
        capacity: cap,
        unit,
        accesses: accesses.len() as u64,
        hits: 0,
        bytes_read: 0,
        bytes_uncached: 0,
    };
    for (t, &k) in accesses.iter().enumerate() {
        let now = t as u64;
        freq[k] += 1;
        let (pool, p) = match policy {
            Policy::Lru => (&mut pools[0], (now, 0)),
            Policy::Lfu => (&mut pools[0], (freq[k], now)),
            Policy::PerLayerLru => (&mut pools[k / e], (now, 0)),
            // Farthest next use has the smallest u64::MAX - next: evicted first.
            Policy::Belady => (&mut pools[0], (u64::MAX - next_use[t], 0)),
        };
        out.bytes_uncached += bytes[k];
        if pool.access(k, &sizes, p) {
            out.hits += 1;
        } else {
            out.bytes_read += bytes[k];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One MoE layer of 4 experts (10 bytes each), one expert per token.
    fn one_layer(seq: &[u32]) -> RoutingTrace {
        let mut t = RoutingTrace::new("hand", vec![0], vec![vec![10; 4]]);
        t.push_sequence(seq.iter().map(|&x| vec![vec![x]]).collect());
        t
    }

    fn hits(t: &RoutingTrace, p: Policy, c: Capacity) -> u64 {
        simulate(t, p, c).hits
    }

    #[test]
    fn lfu_keeps_the_popular_expert_lru_does_not() {
        // Capacity 2, uses 0 0 1 2 0 3 0.
        // LRU: m h m {0,1}; 2 evicts 0 (older) → m; 0 evicts 1 → m; 3 evicts 2 → m; 0 h. 2 hits.
        // LFU: m h m {0,1}; 2 evicts 1 (1 use < 2) → m; 0 h; 3 evicts 2 → m; 0 h. 3 hits.
        // Belady: 2 evicts 1 (never again); 3 evicts 2 (never again): 3 hits.
        let t = one_layer(&[0, 0, 1, 2, 0, 3, 0]);
        let c = Capacity::Experts(2);
        assert_eq!(hits(&t, Policy::Lru, c), 2);
        assert_eq!(hits(&t, Policy::Lfu, c), 3);
        assert_eq!(hits(&t, Policy::Belady, c), 3);
        let r = simulate(&t, Policy::Lru, c);
        assert_eq!((r.accesses, r.bytes_read, r.bytes_uncached), (7, 50, 70));
        assert_eq!(simulate(&t, Policy::Lfu, c).bytes_read, 40);
    }

    #[test]
    fn lru_adapts_where_lfu_clings() {
        // Capacity 2, uses 0 0 0 1 2 1 2 0.
        // LRU: m h h m {0,1}; 2 evicts 0 → m; 1 h; 2 h; 0 evicts 1 → m. 4 hits.
        // LFU: m h h m {0,1}; 2 evicts 1 (1 < 3); 1 evicts 2; 2 evicts 1 (2 < 3); 0 h. 3 hits.
        // Belady: 2 evicts 0 (next use at the end, 1's is sooner): 4 hits.
        let t = one_layer(&[0, 0, 0, 1, 2, 1, 2, 0]);
        let c = Capacity::Experts(2);
        assert_eq!(hits(&t, Policy::Lru, c), 4);
        assert_eq!(hits(&t, Policy::Lfu, c), 3);
        assert_eq!(hits(&t, Policy::Belady, c), 4);
        // Everything fits: only the 3 first uses miss, for every policy.
        for p in Policy::ALL {
            assert_eq!(hits(&t, p, Capacity::Experts(3)), 5, "{p:?}");
        }
    }

    #[test]
    fn per_layer_budget_splits_the_capacity() {
        // Layer 0 cycles experts 0 1 2 0 1 2; layer 1 always uses expert 0.
        // Global LRU, 4 experts: the 4 distinct (layer, expert) fit: 4 misses, 8 hits.
        // Per-layer, 2 each: layer 0 cycles 3 experts through 2 slots under LRU and misses all
        // 6; layer 1 misses once: 7 misses, 5 hits.
        let mut t = RoutingTrace::new("hand", vec![1, 2], vec![vec![1; 3], vec![1; 3]]);
        t.push_sequence(
            [0, 1, 2, 0, 1, 2]
                .iter()
                .map(|&x| vec![vec![x], vec![0]])
                .collect(),
        );
        assert_eq!(hits(&t, Policy::Lru, Capacity::Experts(4)), 8);
        assert_eq!(hits(&t, Policy::PerLayerLru, Capacity::Experts(4)), 5);
        // A fraction of all 6 experts' bytes: 4/6 of 6 bytes = 4 bytes, the same cache.
        assert_eq!(hits(&t, Policy::Lru, Capacity::Fraction(4.0 / 6.0)), 8);
    }

    #[test]
    fn bytes_capacity_uses_expert_sizes() {
        // Layer 0 experts weigh 10 bytes, layer 1's 30; 45 bytes hold one layer-1 expert and
        // one layer-0 expert (40), not two layer-1 ones or a layer-1 and two layer-0 (50).
        // Uses per token: (L0 e0, L1 e0), (L0 e1, L1 e0), (L0 e0, L1 e0).
        // LRU: L0e0 m; L1e0 m (40 bytes); L0e1 m, evicts L0e0 (oldest); L1e0 h;
        // L0e0 m, evicts L0e1 (used before L1e0's hit); L1e0 h. 2 hits, read 10+30+10+10 = 60.
        let mut t = RoutingTrace::new("hand", vec![0, 1], vec![vec![10; 2], vec![30; 2]]);
        t.push_sequence(vec![
            vec![vec![0], vec![0]],
            vec![vec![1], vec![0]],
            vec![vec![0], vec![0]],
        ]);
        let r = simulate(&t, Policy::Lru, Capacity::Bytes(45));
        assert_eq!((r.hits, r.bytes_read, r.bytes_uncached), (2, 60, 120));
        // Per layer: 22 bytes each. Layer 1's 30-byte experts never fit: read all 3 times (90).
        // Layer 0 holds both its experts: e0 m, e1 m, e0 h. 1 hit, read 10+10+90 = 110.
        let r = simulate(&t, Policy::PerLayerLru, Capacity::Bytes(45));
        assert_eq!((r.hits, r.bytes_read), (1, 110));
    }

    #[test]
    fn capacity_parsing() {
        assert_eq!(Capacity::parse("25%"), Ok(Capacity::Fraction(0.25)));
        assert_eq!(Capacity::parse("4G"), Ok(Capacity::Bytes(4 << 30)));
        assert_eq!(Capacity::parse("1.5gib"), Ok(Capacity::Bytes(3 << 29)));
        assert_eq!(Capacity::parse("512M"), Ok(Capacity::Bytes(512 << 20)));
        assert_eq!(Capacity::parse("100B"), Ok(Capacity::Bytes(100)));
        assert_eq!(Capacity::parse("40"), Ok(Capacity::Experts(40)));
        for bad in ["", "abc", "0", "0%", "150%", "-5%", "4Q", "G", "0B"] {
            assert!(Capacity::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Capacity::parse("4Q").unwrap_err().contains("\"4Q\""));
    }
}
