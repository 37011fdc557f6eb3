//! `--max-memory`, `--expert-policy`, `--prefetch`: running a model whose routed experts do
//! not all fit in memory, with an expert cache (`frugal_engine::residency::cache`) in the
//! budget left after the parts that stay mapped.

use std::sync::Arc;

use anyhow::{bail, Context};
use frugal_engine::residency::{
    parse_size, CacheConfig, CacheStats, ExpertCache, MemoryPlan, Policy,
};
use frugal_formats::ModelFiles;
use frugal_model::params::kv_cache_bytes_per_token;
use frugal_model::{LoadOptions, Model};

/// Memory flags shared by run, chat, serve and bench.
#[derive(Clone, Debug, clap::Args)]
pub struct MemoryFlags {
    /// Memory budget for the whole process (4G, 4096M, 0.5G): routed experts are then read
    /// from the model file on demand into an expert cache of what is left after the other
    /// weights, the KV cache and a fixed overhead (default: no budget, everything mapped).
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// The expert cache's capacity itself (e.g. 64K, 2G), instead of what --max-memory leaves:
    /// for experiments and tests (the rest of the process is then not budgeted).
    #[arg(long, value_name = "SIZE")]
    pub expert_cache: Option<String>,
    /// Expert cache eviction policy with --max-memory: lru, lfu or per-layer (LRU within an
    /// equal share per MoE layer).
    #[arg(long, default_value = "lru", value_name = "POLICY")]
    pub expert_policy: String,
    /// With --max-memory: apply the next MoE layer's router to the hidden state after each
    /// attention and read its likely experts in the background.
    #[arg(long)]
    pub prefetch: bool,
    /// With --max-memory: reads in flight at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub io_threads: usize,
}

impl Default for MemoryFlags {
    /// No budget (the flags' defaults).
    fn default() -> Self {
        MemoryFlags {
            max_memory: None,
            expert_cache: None,
            expert_policy: "lru".into(),
            prefetch: false,
            io_threads: 4,
        }
    }
}

impl MemoryFlags {
    /// The eviction policy named by `--expert-policy`.
    fn policy(&self) -> anyhow::Result<Policy> {
        Ok(match self.expert_policy.to_ascii_lowercase().as_str() {
            "lru" => Policy::Lru,
            "lfu" => Policy::Lfu,
            "per-layer" | "per-layer-lru" => Policy::PerLayerLru,
            other => bail!("--expert-policy {other:?} is not a policy; valid: lru, lfu, per-layer"),
        })
    }

    /// The load options for a model these flags will run: [`LoadOptions::from_env`], with
    /// routed experts left in the file's layout when an expert cache will serve them.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            keep_experts_mapped: self.max_memory.is_some() || self.expert_cache.is_some(),
            ..LoadOptions::from_env()
        }
    }

    /// Checks the flags before a model is loaded (so a typo fails fast).
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(m) = &self.max_memory {
            parse_size(m).map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?;
        }
        if let Some(m) = &self.expert_cache {
            parse_size(m).map_err(|e| anyhow::anyhow!("--expert-cache: {e}"))?;
        }
        self.policy()?;
        if self.io_threads == 0 {
            bail!("--io-threads must be at least 1");
        }
        Ok(())
    }
}

/// An attached expert cache, for its statistics.
pub type Cache<'a> = Arc<ExpertCache<'a>>;

/// With `--max-memory`, gives `model` an expert cache sized from the budget for a context of
/// `context_tokens`, and prints the split on stderr; without it, nothing.
pub fn attach<'a>(
    flags: &MemoryFlags,
    files: &'a ModelFiles,
    model: &mut Model<'a>,
    context_tokens: usize,
) -> anyhow::Result<Option<Cache<'a>>> {
    flags.check()?;
    if flags.max_memory.is_none() && flags.expert_cache.is_none() {
        return Ok(None);
    }
    let experts = model.routed_experts();
    if experts.is_empty() {
        bail!("--max-memory and --expert-cache need a mixture-of-experts model (this one has no routed experts)");
    }
    let src = files.tensors().context("the model has no weights")?;
    let all: u64 = src.tensor_infos().iter().map(|t| t.nbytes as u64).sum();
    let routed: u64 = experts.iter().map(|e| e.parts.len() as u64).sum();
    let dense = all.saturating_sub(routed);
    let kv = kv_cache_bytes_per_token(model.config(), 4) * context_tokens as u64;
    let plan = match &flags.max_memory {
        Some(given) => {
            let max = parse_size(given).map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?;
            let plan = MemoryPlan::new(max, dense, kv)
                .map_err(|e| anyhow::anyhow!("--max-memory {given}: {e}"))?;
            Some(plan)
        }
        None => None,
    };
    let capacity = match &flags.expert_cache {
        Some(c) => parse_size(c).map_err(|e| anyhow::anyhow!("--expert-cache: {e}"))?,
        // OK: one of the two flags is given.
        None => plan.expect("--max-memory given").expert_cache,
    };
    let cache = ExpertCache::for_experts(
        &experts,
        |b| files.locate(b),
        CacheConfig {
            capacity,
            policy: flags.policy()?,
            io_threads: flags.io_threads,
            prefetch: flags.prefetch,
        },
    )?;
    // Touching a dense tensor should not read the neighbouring experts ahead.
    files.advise_random();
    let cache = Arc::new(cache);
    let stats = cache.stats();
    let plan = match plan {
        Some(p) => p.summary() + "; ",
        None => String::new(),
    };
    eprintln!(
        "{plan}expert cache {:.2} GB ({} bytes per slot): {} of {} routed experts ({:.2} GB) fit in {} slots",
        stats.capacity_bytes as f64 / 1e9,
        cache.slot_size(),
        stats.slots.min(experts.len() as u64),
        experts.len(),
        routed as f64 / 1e9,
        stats.slots
    );
    model.set_expert_store(Some(cache.clone()));
    Ok(Some(cache))
}

/// The statistics, when there is a cache.
pub fn stats(cache: &Option<Cache<'_>>) -> Option<CacheStats> {
    cache.as_ref().map(|c| c.stats())
}
