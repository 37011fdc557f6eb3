//! The expert cache under pressure on the committed GGUF fixtures (`fixtures/gguf/`): with room
//! for two experts (every layer evicts and re-reads), the logits must still match llama.cpp's
//! and transformers' references within the tolerances of `crates/model/tests/gguf.rs`, and be
//! bit-identical to the mapped path's; the counters must add up.

use frugal_engine::residency::{CacheConfig, ExpertCache, Policy};
use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{DType, ModelFiles, TensorSource};
use frugal_model::{KvCache, LoadOptions, Model};
use frugal_testdata::max_abs_diff;
use serde_json::Value;
use std::sync::Arc;

fn f32_tensor(st: &SafetensorsFile, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|| panic!("reference has no {name}"));
    assert_eq!(t.dtype, DType::F32);
    frugal_testdata::f32s_le(t.data)
}

struct Run {
    mapped: Vec<f32>,
    cached: Vec<f32>,
    llama_cpp: SafetensorsFile,
    stats: frugal_engine::residency::CacheStats,
    expert_sizes: Vec<usize>,
}

/// `fixtures/gguf/<name>/<name>-<ty>.gguf` on its JSON's tokens: the mapped path, then the
/// same model with a cache of two slots (`policy`).
fn run(name: &str, ty: &str, options: LoadOptions, policy: Policy) -> Run {
    let dir = frugal_testdata::fixtures_dir().join("gguf").join(name);
    let stem = format!("{name}-{ty}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap())
            .unwrap();
    let tokens: Vec<u32> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let files = ModelFiles::open(dir.join(format!("{stem}.gguf")).to_str().unwrap()).unwrap();
    let mut model = Model::load_with(&files, options).unwrap();
    let mapped = model
        .forward(&tokens, 0, &mut KvCache::new(&model))
        .unwrap();
    // And one token at a time, the order the cached model repeats below. (Not compared with
    // the prefill: MLA attends a prompt and single tokens by different paths, which agree only
    // to activation-quantization noise when activations are quantized.)
    let step_logits = |model: &Model<'_>| -> Vec<Vec<f32>> {
        let mut kv = KvCache::new(model);
        let steps = tokens.iter().enumerate();
        steps
            .map(|(i, &t)| model.forward(&[t], i, &mut kv).unwrap())
            .collect()
    };
    let mapped_steps = step_logits(&model);

    let experts = model.routed_experts();
    let config = |capacity| CacheConfig {
        capacity,
        policy,
        io_threads: 2,
        prefetch: false,
    };
    let probe = ExpertCache::for_experts(&experts, |b| files.locate(b), config(0)).unwrap();
    let two = 2 * probe.slot_size() as u64;
    let cache =
        Arc::new(ExpertCache::for_experts(&experts, |b| files.locate(b), config(two)).unwrap());
    model.set_expert_store(Some(cache.clone()));
    // The prompt at once, then again one token at a time (decode order: far more misses).
    let cached = model
        .forward(&tokens, 0, &mut KvCache::new(&model))
        .unwrap();
    for (i, (step, want)) in step_logits(&model).iter().zip(&mapped_steps).enumerate() {
        let d = max_abs_diff(step, want);
        assert!(
            d <= 1e-4,
            "{stem} decode step {i} vs the mapped decode: {d}"
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.slots, 2, "{stem}");
    Run {
        mapped,
        cached,
        llama_cpp: SafetensorsFile::open(dir.join(format!("{stem}.logits.safetensors"))).unwrap(),
        stats,
        expert_sizes: experts.iter().map(|e| e.parts.len()).collect(),
    }
}

/// F32 file: llama.cpp and transformers within 1e-4 (as `check_f32`), equal to the mapped
/// path, and the counters: misses and evictions happened, and every miss read its expert's
/// bytes (all experts of these fixtures have one size).
fn check_f32(name: &str, policy: Policy) {
    let r = run(name, "F32", LoadOptions::default(), policy);
    assert_eq!(
        r.cached, r.mapped,
        "{name}: cached logits differ from the mapped path's"
    );
    let lcpp = max_abs_diff(&r.cached, &f32_tensor(&r.llama_cpp, "logits"));
    let tf_ref = SafetensorsFile::open(
        frugal_testdata::fixtures_dir()
            .join("models")
            .join(name)
            .join("reference.safetensors"),
    )
    .unwrap();
    let tf = max_abs_diff(&r.cached, &f32_tensor(&tf_ref, "logits"));
    let s = r.stats;
    eprintln!("{name}-F32 ({policy:?}, 2 slots): vs llama.cpp {lcpp:.3e}, vs transformers {tf:.3e}; {s:?}");
    assert!(lcpp <= 1e-4, "{name} vs llama.cpp: {lcpp}");
    assert!(tf <= 1e-4, "{name} vs transformers: {tf}");
    assert!(s.misses > 0 && s.evictions > 0, "{s:?}");
    assert_eq!(s.fallbacks, 0);
    let size = r.expert_sizes[0] as u64;
    assert!(r.expert_sizes.iter().all(|&b| b as u64 == size));
    assert_eq!(s.bytes_read, s.misses * size, "{s:?}");
    assert!(s.resident_experts <= 2);
}

#[test]
fn qwen3_moe_f32_two_slots() {
    check_f32("qwen3-moe", Policy::Lru);
}

#[test]
fn mixtral_f32_two_slots() {
    check_f32("mixtral", Policy::Lfu);
}

#[test]
fn deepseek_v3_f32_two_slots() {
    check_f32("deepseek-v3", Policy::PerLayerLru);
}

#[test]
fn deepseek_v2_lite_f32_two_slots() {
    check_f32("deepseek-v2-lite", Policy::Lru);
}

/// Quantized experts (Q4_K/Q6_K blocks read at unaligned offsets): exact activations vs
/// llama.cpp on the dequantized weights within 1e-4 (as `check_quant`), equal to the mapped
/// path.
#[test]
fn q4_k_m_two_slots() {
    let exact = LoadOptions {
        exact_activations: true,
        keep_experts_mapped: false,
    };
    for name in ["qwen3-moe", "deepseek-v2-lite", "deepseek-v3-wide"] {
        let r = run(name, "Q4_K_M", exact, Policy::Lru);
        assert_eq!(r.cached, r.mapped, "{name}");
        let deq = max_abs_diff(
            &r.cached,
            &f32_tensor(&r.llama_cpp, "logits_dequantized_weights"),
        );
        eprintln!(
            "{name}-Q4_K_M (2 slots): vs dequantized weights {deq:.3e}; {:?}",
            r.stats
        );
        assert!(deq <= 1e-4, "{name}: {deq}");
        assert!(r.stats.misses > 0 && r.stats.evictions > 0);
    }
}

/// Quantized activations on deepseek-v3-wide (Q4_K routed experts of 256×256): loaded by
/// default, the mapped model multiplies by repacked copies of its experts (`quant::repack`),
/// while the cache hands out the file's bytes (plain layout, `quant::gemm`). Both equal
/// `vec_dot` bit for bit, so the logits must be identical.
#[test]
fn q4_k_m_repacked_experts_equal_file_layout() {
    let r = run(
        "deepseek-v3-wide",
        "Q4_K_M",
        LoadOptions::default(),
        Policy::Lru,
    );
    assert_eq!(r.cached, r.mapped);
    assert!(r.stats.misses > 0);
}
