//! The expert cache's low-bit fallback tier (`frugal_engine::residency::tiered`) on the
//! committed GGUF fixtures: the F32 model, with llama.cpp's own Q8_0 / Q4_K_M file of the same
//! model (made by `llama-quantize`, `fixtures/gguf/make_gguf.py`) as the fallback.
//!
//! - Full tier of one slot, low tier with room for every expert, warmed by a first pass: most
//!   experts of the second pass come from the low-bit copies. The counters must say so, and the
//!   logits must move away from the F32 references (llama.cpp's and transformers') but by at
//!   most the bound below.
//! - Full tier with room for every expert: after a first pass every expert is resident at full
//!   precision, the fallback is never used, and the logits equal the mapped path's exactly.
//!
//! The bound. A routed expert computed from its low-bit copy differs from the F32 expert by
//! that type's rounding of its weights (and of its input, quantized to the type's activation
//! format as llama.cpp does). The whole low-bit model, every tensor rounded, moves llama.cpp's
//! logits by `D = max |logits(low-bit file) - logits(F32 file)|` (both committed). Routed
//! experts are a part of those tensors, so their share of the error is of the order of `D`; the
//! test allows `2·D` (errors of parts need not add monotonically: they can cancel in the whole
//! model and not in the part). There is no llama.cpp reference for "F32 dense, low-bit
//! experts" to compare with more tightly.

use std::time::{Duration, Instant};

use frugal_engine::residency::{CacheConfig, ExpertCache, Policy, TieredCache};
use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{DType, ModelFiles, TensorSource};
use frugal_model::{KvCache, Model};
use frugal_testdata::max_abs_diff;
use serde_json::Value;
use std::sync::Arc;

fn f32_tensor(path: &std::path::Path, name: &str) -> Vec<f32> {
    let st = SafetensorsFile::open(path).unwrap();
    let t = st
        .tensor(name)
        .unwrap_or_else(|| panic!("reference has no {name}"));
    assert_eq!(t.dtype, DType::F32);
    frugal_testdata::f32s_le(t.data)
}

/// The prompt one token at a time (decode order), all steps' logits.
fn decode(model: &Model<'_>, tokens: &[u32]) -> Vec<f32> {
    let mut kv = KvCache::new(model);
    let mut out = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        out.extend(model.forward(&[t], i, &mut kv).unwrap());
    }
    out
}

/// Waits until the low tier holds `n` experts (its background reads are done).
fn wait_low_resident(cache: &TieredCache<'_>, n: u64) {
    let start = Instant::now();
    while cache.stats().low_tier.unwrap().resident_experts < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "low tier never filled: {:?}",
            cache.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check(name: &str, low_ty: &str) {
    let dir = frugal_testdata::fixtures_dir().join("gguf").join(name);
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}-F32.json"))).unwrap(),
    )
    .unwrap();
    let tokens: Vec<u32> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let path = |ty: &str| dir.join(format!("{name}-{ty}.gguf"));
    let files = ModelFiles::open(path("F32").to_str().unwrap()).unwrap();
    let low_files = ModelFiles::open(path(low_ty).to_str().unwrap()).unwrap();
    let mut model = Model::load(&files).unwrap();
    let low_model = Model::load(&low_files).unwrap();
    let mapped = decode(&model, &tokens);

    let experts = model.routed_experts();
    let low_experts = low_model.routed_experts();
    assert!(low_experts
        .iter()
        .any(|e| e.parts.dtypes.unwrap()[0] != DType::F32));
    let config = |capacity| CacheConfig {
        capacity,
        policy: Policy::Lru,
        io_threads: 2,
        prefetch: false,
    };
    let slot = |ex: &[_], f: &ModelFiles| {
        ExpertCache::for_experts(ex, |b| f.locate(b), config(0))
            .unwrap()
            .slot_size() as u64
    };
    let (full_slot, low_slot) = (slot(&experts, &files), slot(&low_experts, &low_files));
    let n = experts.len() as u64;
    let tiered = |full_slots: u64| {
        Arc::new(TieredCache::new(
            ExpertCache::for_experts(
                &experts,
                |b| files.locate(b),
                config(full_slots * full_slot),
            )
            .unwrap(),
            ExpertCache::for_experts(&low_experts, |b| low_files.locate(b), config(n * low_slot))
                .unwrap(),
        ))
    };

    // One full-precision slot: the second pass runs mostly on low-bit copies.
    let cache = tiered(1);
    model.set_expert_store(Some(cache.clone()));
    let first = decode(&model, &tokens);
    wait_low_resident(&cache, cache.stats().low_tier.unwrap().reads);
    let before = cache.stats();
    let second = decode(&model, &tokens);
    let s = cache.stats().since(&before);
    let low = s.low_tier.unwrap();
    let f32_lcpp = f32_tensor(
        &dir.join(format!("{name}-F32.logits.safetensors")),
        "logits",
    );
    let low_lcpp = f32_tensor(
        &dir.join(format!("{name}-{low_ty}.logits.safetensors")),
        "logits",
    );
    let tf = f32_tensor(
        &frugal_testdata::fixtures_dir()
            .join("models")
            .join(name)
            .join("reference.safetensors"),
        "logits",
    );
    let bound = 2.0 * max_abs_diff(&low_lcpp, &f32_lcpp);
    let (d_lcpp, d_tf, d_mapped) = (
        max_abs_diff(&second, &f32_lcpp),
        max_abs_diff(&second, &tf),
        max_abs_diff(&second, &mapped),
    );
    eprintln!(
        "{name}, {low_ty} fallback, 1 full slot: {} fallback uses of {} requests; |Δ| vs \
         llama.cpp F32 {d_lcpp:.3e}, vs transformers {d_tf:.3e}, vs mapped {d_mapped:.3e}; \
         bound 2·D = {bound:.3e}; first pass vs mapped {:.3e}",
        low.fallback_uses,
        s.hits + s.misses + low.fallback_uses,
        max_abs_diff(&first, &mapped),
    );
    assert!(low.fallback_uses > 0, "{s:?}");
    assert!(d_mapped > 0.0, "{name}: the low-bit copies changed nothing");
    assert!(
        d_lcpp <= bound,
        "{name} vs llama.cpp F32: {d_lcpp} > {bound}"
    );
    assert!(d_tf <= bound, "{name} vs transformers: {d_tf} > {bound}");

    // Room for every expert at full precision: after one pass, never the fallback.
    let cache = tiered(n);
    model.set_expert_store(Some(cache.clone()));
    decode(&model, &tokens);
    wait_low_resident(&cache, cache.stats().low_tier.unwrap().reads);
    let before = cache.stats();
    let exact = decode(&model, &tokens);
    let s = cache.stats().since(&before);
    assert_eq!(s.low_tier.unwrap().fallback_uses, 0, "{s:?}");
    assert_eq!(s.misses, 0, "{s:?}");
    assert_eq!(exact, mapped, "{name}: logits with every expert resident");
}

#[test]
fn qwen3_moe_q8_0_fallback() {
    check("qwen3-moe", "Q8_0");
}

#[test]
fn deepseek_v2_lite_q4_k_m_fallback() {
    check("deepseek-v2-lite", "Q4_K_M");
}
