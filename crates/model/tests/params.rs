//! Tensor plans and parameter counts against transformers (`fixtures/params/params_reference.json`,
//! written by `fixtures/params/gen_params_reference.py` from models built on the meta device) and
//! against the totals the model cards state.

use std::collections::BTreeMap;

use frugal_formats::config::ModelConfig;
use frugal_formats::DType;
use frugal_model::params::{
    kv_cache_bytes_per_token, param_counts, tensor_plan, weight_bytes, TensorKind,
};
use serde_json::Value;

use frugal_testdata::reference_dir;

fn config(name: &str) -> ModelConfig {
    let path = reference_dir()
        .join("configs")
        .join(name)
        .join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ModelConfig::from_hf_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn transformers_reference() -> Value {
    let path = frugal_testdata::fixtures_dir().join("params/params_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("params_reference.json")).unwrap()
}

const MODELS: &[&str] = &[
    "deepseek-ai__DeepSeek-R1",
    "deepseek-ai__DeepSeek-V3",
    "deepseek-ai__DeepSeek-V2-Lite",
    "moonshotai__Kimi-K2-Instruct",
    "Qwen__Qwen3-30B-A3B",
    "mistralai__Mixtral-8x7B-v0.1",
];

fn billions(n: u64) -> f64 {
    n as f64 / 1e9
}

#[test]
fn plans_match_transformers_tensor_for_tensor() {
    let reference = transformers_reference();
    for name in MODELS {
        let cfg = config(name);
        let plan = tensor_plan(&cfg);
        let r = &reference["models"][name];
        // transformers 5 names Mixtral's block `mlp` and fuses each layer's experts into
        // `experts.gate_up_proj` / `experts.down_proj`; compare experts per layer by size.
        let mut ours: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut ours_experts: BTreeMap<usize, u64> = BTreeMap::new();
        for t in plan.iter().filter(|t| !t.mtp) {
            if let TensorKind::RoutedExpert { layer, .. } = t.kind {
                *ours_experts.entry(layer).or_default() += t.numel();
            } else {
                ours.insert(t.name.replace("block_sparse_moe", "mlp"), t.shape.clone());
            }
        }
        let mut theirs: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut theirs_experts: BTreeMap<usize, u64> = BTreeMap::new();
        for (k, v) in r["tensors"].as_object().unwrap() {
            let shape: Vec<usize> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            if k.contains(".experts.") && !k.contains("shared_experts") {
                let layer: usize = k.split('.').nth(2).unwrap().parse().unwrap();
                *theirs_experts.entry(layer).or_default() +=
                    shape.iter().map(|&d| d as u64).product::<u64>();
            } else {
                theirs.insert(k.clone(), shape);
            }
        }
        assert_eq!(ours, theirs, "{name}: non-expert tensors differ");
        assert_eq!(
            ours_experts, theirs_experts,
            "{name}: routed experts per layer differ"
        );

        let c = param_counts(&cfg);
        let total = r["params_total"].as_u64().unwrap();
        let routed = r["params_routed_experts"].as_u64().unwrap();
        let moe = cfg.ffn.moe.as_ref().unwrap();
        let (k, n) = (moe.num_experts_per_tok as u64, moe.num_experts as u64);
        assert_eq!(c.total, total, "{name}: total");
        assert_eq!(c.routed_experts, routed, "{name}: routed");
        assert_eq!(c.active, total - routed + routed / n * k, "{name}: active");
    }
}

#[test]
fn counts_match_the_model_cards() {
    // (model, total B, active B, whether the card leaves the input embedding out of "active")
    let cards = [
        ("deepseek-ai__DeepSeek-R1", 671.0, 37.0, true),
        ("deepseek-ai__DeepSeek-V2-Lite", 15.7, 2.4, true),
        ("Qwen__Qwen3-30B-A3B", 30.5, 3.3, false),
        ("mistralai__Mixtral-8x7B-v0.1", 46.7, 12.9, false),
    ];
    let mixtral = config("mistralai__Mixtral-8x7B-v0.1");
    assert_eq!(
        format!("{:.1}", billions(param_counts(&mixtral).active)),
        "12.9"
    );
    for (name, total, active, non_embedding) in cards {
        let cfg = config(name);
        let c = param_counts(&cfg);
        let ours_active = if non_embedding {
            c.active_non_embedding(&cfg)
        } else {
            c.active
        };
        assert_eq!(
            format!("{:.1}", billions(c.total)),
            format!("{total:.1}"),
            "{name} total"
        );
        // Cards round loosely: R1's "37B" is 36.6B, V2-Lite's "2.4B" is 2.45B (2.66B with the
        // embedding), Qwen3's "3.3B" is 3.35B truncated. The exact values are checked against
        // transformers in `plans_match_transformers_tensor_for_tensor`.
        let rel = (billions(ours_active) - active).abs() / active;
        assert!(
            rel < 0.025,
            "{name}: active {} vs card {active}",
            billions(ours_active)
        );
    }
    // Kimi-K2: "1T total, 32B activated" (card), 1.03T precisely.
    let kimi = config("moonshotai__Kimi-K2-Instruct");
    let c = param_counts(&kimi);
    assert_eq!(format!("{:.2}", c.total as f64 / 1e12), "1.03");
    assert!((billions(c.active_non_embedding(&kimi)) - 32.0).abs() < 0.5);
    assert_eq!(c.mtp_total, 0);
}

#[test]
fn deepseek_mtp_module_is_counted_apart() {
    // DeepSeek-V3's README: "685B" on the hub = 671B main model + "14B" MTP module. Exactly:
    // 671.03B + 13.46B = 684.49B, which the hub rounds up (its count also holds ~0.04B of FP8
    // scale tensors).
    let cfg = config("deepseek-ai__DeepSeek-R1");
    let c = param_counts(&cfg);
    let all = billions(c.total + c.mtp_total);
    assert!((684.0..685.0).contains(&all), "{all}");
    assert!(
        (13.0..14.5).contains(&billions(c.mtp_total)),
        "{}",
        billions(c.mtp_total)
    );
    assert!(c.mtp_active < c.mtp_total);
    let plan = tensor_plan(&cfg);
    let mtp: Vec<_> = plan.iter().filter(|t| t.mtp).collect();
    assert!(mtp.iter().all(|t| t.name.starts_with("model.layers.61.")));
    for name in [
        "eh_proj.weight",
        "enorm.weight",
        "hnorm.weight",
        "shared_head.head.weight",
        "mlp.experts.255.down_proj.weight",
    ] {
        assert!(
            mtp.iter()
                .any(|t| t.name == format!("model.layers.61.{name}")),
            "{name}"
        );
    }
}

#[test]
fn kv_cache_per_token() {
    // MLA caches the latent and the shared rope key: 61 x (512 + 64) elements.
    let r1 = config("deepseek-ai__DeepSeek-R1");
    assert_eq!(kv_cache_bytes_per_token(&r1, 2), 61 * (512 + 64) * 2);
    assert_eq!(kv_cache_bytes_per_token(&r1, 1), 61 * 576);
    let lite = config("deepseek-ai__DeepSeek-V2-Lite");
    assert_eq!(kv_cache_bytes_per_token(&lite, 2), 27 * 576 * 2);
    // GQA: K and V per KV head.
    let qwen = config("Qwen__Qwen3-30B-A3B");
    assert_eq!(kv_cache_bytes_per_token(&qwen, 2), 48 * 2 * 4 * 128 * 2);
    let mixtral = config("mistralai__Mixtral-8x7B-v0.1");
    assert_eq!(kv_cache_bytes_per_token(&mixtral, 2), 32 * 2 * 8 * 128 * 2);
}

#[test]
fn weight_memory_per_dtype() {
    let cfg = config("mistralai__Mixtral-8x7B-v0.1");
    let plan = tensor_plan(&cfg);
    let c = param_counts(&cfg);
    assert_eq!(weight_bytes(&plan, DType::BF16), 2 * c.total);
    assert_eq!(weight_bytes(&plan, DType::F32), 4 * c.total);
    // Q8_0: 34 bytes per 32 weights; every Mixtral row is a multiple of 32.
    assert_eq!(weight_bytes(&plan, DType::Q8_0), c.total / 32 * 34);
    // Q4_K blocks of 256: the 4096-wide norms are whole blocks too.
    assert_eq!(weight_bytes(&plan, DType::Q4K), c.total / 256 * 144);
}
