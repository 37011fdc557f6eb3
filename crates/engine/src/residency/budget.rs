//! `--max-memory`: splitting a process memory budget between the parts of a model that stay
//! mapped and the expert cache.
//!
//! Everything but the routed experts (attention, norms, embeddings, the LM head, dense and
//! shared FFNs, routers) stays in the mapped file and is touched every token, so it counts in
//! full. So do the KV cache for the expected context, and a fixed [`OVERHEAD`] for everything
//! else the process holds: the program itself, the tokenizer, thread stacks, activations and
//! the allocator's slack. What remains is the expert cache's capacity.

/// What a process holds besides weights and KV cache: code, tokenizer, thread stacks,
/// activation scratch, allocator slack (measured on DeepSeek-V2-Lite with a 100k vocabulary:
/// see docs/ARCHITECTURE.md).
pub const OVERHEAD: u64 = 320 << 20;

/// Parses a byte size: a number with an optional unit, `B`, `K`, `M`, `G` or `T` (also `KB`,
/// `KiB`, ...; powers of 1024): `4G`, `4096M`, `0.5G`, `1000000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || format!("{s:?} is not a size (examples: 4G, 4096M, 0.5G, 1000000)");
    let t = s.trim().to_ascii_uppercase();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let v: f64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(err()),
    };
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?}: a size must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// A budget split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemoryPlan {
    /// The whole budget.
    pub max_memory: u64,
    /// Weights that stay mapped (all but the routed experts).
    pub dense_bytes: u64,
    /// The KV cache at the expected context length.
    pub kv_bytes: u64,
    /// [`OVERHEAD`].
    pub overhead: u64,
    /// What is left: the expert cache's capacity.
    pub expert_cache: u64,
}

/// `1.23 GB`, `45.6 MB` or `1024 bytes`, for messages.
fn gb(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{:.2} GB", b as f64 / 1e9)
    } else if b >= 1_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{b} bytes")
    }
}

impl MemoryPlan {
    /// Splits `max_memory`; an error naming the sizes when the fixed parts do not fit.
    pub fn new(max_memory: u64, dense_bytes: u64, kv_bytes: u64) -> Result<MemoryPlan, String> {
        let fixed = dense_bytes + kv_bytes + OVERHEAD;
        if fixed >= max_memory {
            return Err(format!(
                "a budget of {} is too small: the parts that stay in memory need {} (weights other than routed experts {}, KV cache {}, overhead {}), before any expert cache",
                gb(max_memory),
                gb(fixed),
                gb(dense_bytes),
                gb(kv_bytes),
                gb(OVERHEAD)
            ));
        }
        Ok(MemoryPlan {
            max_memory,
            dense_bytes,
            kv_bytes,
            overhead: OVERHEAD,
            expert_cache: max_memory - fixed,
        })
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "memory budget {}: weights other than routed experts {}, KV cache {}, overhead {}, expert cache {}",
            gb(self.max_memory),
            gb(self.dense_bytes),
            gb(self.kv_bytes),
            gb(self.overhead),
            gb(self.expert_cache)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_names_bad_ones() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4096M"), Ok(4 << 30));
        assert_eq!(parse_size("0.5G"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["abc", "", "4X", "G", "-1G", "0"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn splits_a_budget_or_says_what_does_not_fit() {
        let p = MemoryPlan::new(4 << 30, 1 << 30, 100 << 20).unwrap();
        assert_eq!(
            p.expert_cache,
            (4 << 30) - (1 << 30) - (100 << 20) - OVERHEAD
        );
        let e = MemoryPlan::new(1024, 1 << 30, 0).unwrap_err();
        assert!(
            e.contains("too small") && e.contains("1.07 GB") && e.contains("1024 bytes"),
            "{e}"
        );
    }
}
