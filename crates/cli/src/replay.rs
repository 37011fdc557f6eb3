//! `frugal experts --trace F --replay-model PATH --expert-cache SIZE`: the real expert cache,
//! with its reads from the model file, driven by a routing trace instead of a model run (a
//! recorded trace, or a skewed one from `tools/make_skewed_trace.py`), once per policy. What the
//! simulation predicts, measured: hit rate, bytes read, read throughput and wall time.

use std::time::Instant;

use anyhow::{bail, Context};
use frugal_engine::residency::{parse_size, CacheConfig, ExpertCache, Policy, RoutingTrace};
use frugal_model::blocks::experts::ExpertStore;
use frugal_model::{LoadOptions, Model};

use crate::load::open_model;

/// Replays `trace` (token by token, MoE layer by layer) against a cache of `capacity` over the
/// experts of `model`, for LRU, LFU and per-layer LRU; prints one line per policy.
pub fn replay(
    trace: &RoutingTrace,
    model: &str,
    capacity: &str,
    io_threads: usize,
) -> anyhow::Result<()> {
    let capacity = parse_size(capacity).map_err(|e| anyhow::anyhow!("--expert-cache: {e}"))?;
    let files = open_model(model)?;
    // Only the experts' places in the file are used: no repacked copies.
    let options = LoadOptions {
        keep_experts_mapped: true,
        ..LoadOptions::from_env()
    };
    let m = Model::load_with(&files, options).with_context(|| format!("loading {model}"))?;
    let experts = m.routed_experts();
    let moe_layers: Vec<usize> = m.expert_bytes().iter().map(|(l, _)| *l).collect();
    if moe_layers != trace.layers {
        bail!(
            "the trace's MoE layers {:?} are not {model}'s {:?}",
            trace.layers,
            moe_layers
        );
    }
    if experts.len() != trace.layers.len() * trace.num_experts {
        bail!(
            "the trace has {} experts per layer; {model} has {} in all over {} MoE layers",
            trace.num_experts,
            experts.len(),
            moe_layers.len()
        );
    }
    files.advise_random();
    let slot = ExpertCache::for_experts(
        &experts,
        |b| files.locate(b),
        CacheConfig {
            capacity: 0,
            policy: Policy::Lru,
            io_threads: 1,
            prefetch: false,
        },
    )?
    .slot_size();
    println!(
        "replay of {} tokens × {} MoE layers against {model}, expert cache {:.2} GB ({} slots of {slot} bytes):",
        trace.tokens.len(),
        trace.layers.len(),
        capacity as f64 / 1e9,
        capacity / slot as u64,
    );
    println!(
        "{:>14}  {:>8}  {:>10}  {:>9}  {:>9}  {:>9}",
        "policy", "hit rate", "read GB", "GB/s", "stall s", "tokens/s"
    );
    for policy in [Policy::Lru, Policy::Lfu, Policy::PerLayerLru] {
        let cache = ExpertCache::for_experts(
            &experts,
            |b| files.locate(b),
            CacheConfig {
                capacity,
                policy,
                io_threads,
                prefetch: false,
            },
        )?;
        let t0 = Instant::now();
        for token in &trace.tokens {
            for (layer, ids) in trace.layers.iter().zip(token) {
                let ids: Vec<usize> = ids.iter().map(|&e| e as usize).collect();
                cache.with_experts(*layer, &ids, &mut |_| {});
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let s = cache.stats();
        println!(
            "{:>14}  {:>7.1}%  {:>10.2}  {:>9.2}  {:>9.2}  {:>9.2}",
            policy.name(),
            100.0 * s.hit_rate(),
            s.bytes_read as f64 / 1e9,
            s.read_gbps(),
            s.stall_seconds,
            trace.tokens.len() as f64 / secs
        );
    }
    Ok(())
}
