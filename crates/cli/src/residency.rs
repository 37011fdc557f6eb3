//! `--max-memory`, `--expert-policy`, `--prefetch`: running a model whose routed experts do
//! not all fit in memory, with an expert cache (`frugal_engine::residency::cache`) in the
//! budget left after the parts that stay mapped. `--expert-fallback`: part of that budget
//! holds low-bit copies of experts from another GGUF of the same model
//! (`frugal_engine::residency::tiered`), used on a miss instead of waiting for the read.

use std::sync::Arc;

use anyhow::{bail, Context};
use frugal_engine::residency::{
    parse_size, CacheConfig, CacheStats, ExpertCache, MemoryPlan, Policy, TieredCache,
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
    /// With --max-memory or --expert-cache: a lower-bit GGUF of the same model (e.g. made by
    /// `frugal quantize MODEL.gguf LOW.gguf --type q2_k --allow-requantize`). On a miss, an
    /// expert whose low-bit copy is resident is computed with that copy at once (inexact) while
    /// the full-precision read goes on in the background.
    #[arg(long, value_name = "PATH")]
    pub expert_fallback: Option<String>,
    /// With --expert-fallback: the share of the expert cache's memory that holds low-bit
    /// copies (e.g. 30%, 0.3).
    #[arg(long, default_value = "30%", value_name = "SHARE")]
    pub fallback_share: String,
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
            expert_fallback: None,
            fallback_share: "30%".into(),
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
        self.share()?;
        if self.expert_fallback.is_some()
            && self.max_memory.is_none()
            && self.expert_cache.is_none()
        {
            bail!(
                "--expert-fallback needs --max-memory or --expert-cache (a bounded expert cache)"
            );
        }
        Ok(())
    }

    /// `--fallback-share` as a fraction in [0, 1).
    fn share(&self) -> anyhow::Result<f64> {
        let s = self.fallback_share.trim();
        let v = match s.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => s.parse::<f64>(),
        };
        match v {
            Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
            _ => bail!("--fallback-share {s:?} is not a share below 100% (e.g. 30% or 0.3)"),
        }
    }
}

/// An attached expert cache, for its statistics.
#[derive(Clone)]
pub enum Cache<'a> {
    /// One tier.
    Full(Arc<ExpertCache<'a>>),
    /// With a low-bit fallback tier.
    Tiered(Arc<TieredCache<'a>>),
}

impl Cache<'_> {
    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        match self {
            Cache::Full(c) => c.stats(),
            Cache::Tiered(c) => c.stats(),
        }
    }

    /// Bytes of one full-precision slot.
    pub fn slot_size(&self) -> usize {
        match self {
            Cache::Full(c) => c.slot_size(),
            Cache::Tiered(c) => c.full().slot_size(),
        }
    }
}

/// The low-bit fallback's routed experts, checked against `model`'s: the same architecture,
/// sizes, and experts. Its files are kept for the rest of the process (as the model's are).
fn fallback_experts(
    path: &str,
    model: &Model<'_>,
) -> anyhow::Result<(
    &'static ModelFiles,
    Vec<frugal_model::blocks::experts::RoutedExpert<'static>>,
)> {
    let files = ModelFiles::open(path).with_context(|| format!("--expert-fallback {path}"))?;
    // Lives as long as the process: the cache's I/O and the mapped fallback views need it.
    let files: &'static ModelFiles = Box::leak(Box::new(files));
    let low = Model::load(files).with_context(|| format!("--expert-fallback {path}"))?;
    let (a, b) = (model.config(), low.config());
    let mismatch = |what: &str, x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| {
        anyhow::anyhow!(
            "--expert-fallback {path} is not a copy of the same model: {what} is {y:?}, the model's is {x:?}"
        )
    };
    if a.architecture != b.architecture {
        return Err(mismatch("architecture", &a.architecture, &b.architecture));
    }
    if a.hidden_size != b.hidden_size {
        return Err(mismatch("hidden_size", &a.hidden_size, &b.hidden_size));
    }
    if a.num_hidden_layers != b.num_hidden_layers {
        return Err(mismatch(
            "num_hidden_layers",
            &a.num_hidden_layers,
            &b.num_hidden_layers,
        ));
    }
    if a.ffn != b.ffn {
        return Err(mismatch("the feed-forward configuration", &a.ffn, &b.ffn));
    }
    let experts = low.routed_experts();
    let ids = |e: &[frugal_model::blocks::experts::RoutedExpert<'_>]| {
        e.iter().map(|r| (r.layer, r.expert)).collect::<Vec<_>>()
    };
    if ids(&experts) != ids(&model.routed_experts()) {
        bail!("--expert-fallback {path}: its routed experts are not the model's (layers or ids differ)");
    }
    Ok((files, experts))
}

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
    let config = |capacity| -> anyhow::Result<CacheConfig> {
        Ok(CacheConfig {
            capacity,
            policy: flags.policy()?,
            io_threads: flags.io_threads,
            prefetch: flags.prefetch,
        })
    };
    let share = flags.share()?;
    let low_capacity = match flags.expert_fallback {
        Some(_) => (capacity as f64 * share) as u64,
        None => 0,
    };
    let full = ExpertCache::for_experts(
        &experts,
        |b| files.locate(b),
        config(capacity - low_capacity)?,
    )?;
    // Touching a dense tensor should not read the neighbouring experts ahead.
    files.advise_random();
    let cache = match &flags.expert_fallback {
        None => Cache::Full(Arc::new(full)),
        Some(path) => {
            let (low_files, low_experts) = fallback_experts(path, model)?;
            let low = ExpertCache::for_experts(
                &low_experts,
                |b| low_files.locate(b),
                config(low_capacity)?,
            )?;
            low_files.advise_random();
            Cache::Tiered(Arc::new(TieredCache::new(full, low)))
        }
    };
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
    if let Some(l) = &stats.low_tier {
        eprintln!(
            "low-bit fallback tier {:.2} GB ({} slots)",
            l.capacity_bytes as f64 / 1e9,
            l.slots
        );
    }
    match &cache {
        Cache::Full(c) => model.set_expert_store(Some(c.clone())),
        Cache::Tiered(c) => model.set_expert_store(Some(c.clone())),
    }
    Ok(Some(cache))
}

/// The statistics, when there is a cache.
pub fn stats(cache: &Option<Cache<'_>>) -> Option<CacheStats> {
    cache.as_ref().map(|c| c.stats())
}
