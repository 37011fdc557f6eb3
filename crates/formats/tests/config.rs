//! `ModelConfig` from real hub config.json files, checked against what transformers resolves
//! from the same files (`fixtures/config/reference.json`, written by
//! `fixtures/config/gen_config_reference.py`), plus GGUF metadata and bad input.

use std::collections::HashMap;
use std::path::PathBuf;

use frugal_formats::config::{
    Architecture, Attention, ConfigError, Fp8Format, GgufKeyValues, ModelConfig, RopeScaling,
    ScoringFunc, TopkMethod, WeightQuantization,
};
use serde_json::Value;

const HUB: &[&str] = &[
    "deepseek-ai__DeepSeek-R1",
    "deepseek-ai__DeepSeek-V3",
    "deepseek-ai__DeepSeek-V2-Lite",
    "moonshotai__Kimi-K2-Instruct",
    "Qwen__Qwen3-30B-A3B",
    "mistralai__Mixtral-8x7B-v0.1",
];

use frugal_testdata::reference_dir;

fn fixtures() -> PathBuf {
    frugal_testdata::fixtures_dir().join("config")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn hub(name: &str) -> ModelConfig {
    let text = read(
        reference_dir()
            .join("configs")
            .join(name)
            .join("config.json"),
    );
    ModelConfig::from_hf_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference() -> Value {
    serde_json::from_str(&read(fixtures().join("reference.json"))).expect("reference.json is JSON")
}

fn as_usize(v: &Value) -> usize {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an integer, got {v}")) as usize
}

/// Our typed description against transformers' resolved attributes for the same file.
fn check_against_transformers(name: &str, cfg: &ModelConfig, r: &Value) {
    let ctx = |what: &str| format!("{name}: {what}");
    assert_eq!(
        cfg.vocab_size,
        as_usize(&r["vocab_size"]),
        "{}",
        ctx("vocab_size")
    );
    assert_eq!(
        cfg.hidden_size,
        as_usize(&r["hidden_size"]),
        "{}",
        ctx("hidden_size")
    );
    assert_eq!(
        cfg.num_hidden_layers,
        as_usize(&r["num_hidden_layers"]),
        "{}",
        ctx("layers")
    );
    assert_eq!(
        cfg.max_position_embeddings,
        as_usize(&r["max_position_embeddings"]),
        "{}",
        ctx("max_pos")
    );
    assert_eq!(
        cfg.rms_norm_eps,
        r["rms_norm_eps"].as_f64().unwrap(),
        "{}",
        ctx("eps")
    );
    assert_eq!(
        cfg.tie_word_embeddings,
        r["tie_word_embeddings"].as_bool().unwrap(),
        "{}",
        ctx("tie")
    );
    assert_eq!(
        cfg.attention.num_heads(),
        as_usize(&r["num_attention_heads"]),
        "{}",
        ctx("heads")
    );
    assert_eq!(
        cfg.bos_token_id.map(u64::from),
        r["bos_token_id"].as_u64(),
        "{}",
        ctx("bos")
    );
    assert_eq!(
        cfg.eos_token_ids,
        vec![r["eos_token_id"].as_u64().unwrap() as u32],
        "{}",
        ctx("eos")
    );
    match &cfg.attention {
        Attention::Gqa(g) => {
            assert_eq!(
                g.num_kv_heads,
                as_usize(&r["num_key_value_heads"]),
                "{}",
                ctx("kv heads")
            );
            // transformers leaves Mixtral's head_dim None and derives hidden / heads in the model.
            let head_dim = match r["head_dim"].as_u64() {
                Some(d) => d as usize,
                None => cfg.hidden_size / cfg.attention.num_heads(),
            };
            assert_eq!(g.head_dim, head_dim, "{}", ctx("head_dim"));
            assert_eq!(cfg.rope.rotary_dim, g.head_dim, "{}", ctx("rotary dim"));
        }
        Attention::Mla(m) => {
            assert_eq!(
                m.q_lora_rank,
                r["q_lora_rank"].as_u64().map(|v| v as usize),
                "{}",
                ctx("q_lora")
            );
            assert_eq!(
                m.kv_lora_rank,
                as_usize(&r["kv_lora_rank"]),
                "{}",
                ctx("kv_lora")
            );
            assert_eq!(
                m.qk_nope_head_dim,
                as_usize(&r["qk_nope_head_dim"]),
                "{}",
                ctx("nope")
            );
            assert_eq!(
                m.qk_rope_head_dim,
                as_usize(&r["qk_rope_head_dim"]),
                "{}",
                ctx("rope dims")
            );
            assert_eq!(
                m.v_head_dim,
                as_usize(&r["v_head_dim"]),
                "{}",
                ctx("v_head_dim")
            );
            // transformers' DeepSeek classes rotate head_dim = qk_rope_head_dim dims.
            assert_eq!(
                cfg.rope.rotary_dim,
                as_usize(&r["head_dim"]),
                "{}",
                ctx("rotary dim")
            );
            assert!(cfg.rope.interleaved, "{}", ctx("interleaved"));
        }
    }
    let rp = &r["rope_parameters"];
    assert_eq!(
        cfg.rope.theta,
        rp["rope_theta"].as_f64().unwrap(),
        "{}",
        ctx("theta")
    );
    match (&cfg.rope.scaling, rp["rope_type"].as_str().unwrap()) {
        (RopeScaling::None, "default") => {}
        (
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                attention_factor,
            },
            "yarn",
        ) => {
            assert_eq!(
                *factor,
                rp["factor"].as_f64().unwrap(),
                "{}",
                ctx("yarn factor")
            );
            assert_eq!(
                *original_max_position_embeddings,
                as_usize(&rp["original_max_position_embeddings"])
            );
            assert_eq!(
                *beta_fast,
                rp["beta_fast"].as_f64().unwrap(),
                "{}",
                ctx("beta_fast")
            );
            assert_eq!(
                *beta_slow,
                rp["beta_slow"].as_f64().unwrap(),
                "{}",
                ctx("beta_slow")
            );
            assert_eq!(*mscale, rp["mscale"].as_f64(), "{}", ctx("mscale"));
            assert_eq!(
                *mscale_all_dim,
                rp["mscale_all_dim"].as_f64(),
                "{}",
                ctx("mscale_all_dim")
            );
            assert_eq!(*attention_factor, None);
        }
        (ours, theirs) => panic!("{name}: rope scaling {ours:?} vs transformers {theirs}"),
    }
    let moe = cfg.ffn.moe.as_ref().expect("all hub configs here are MoE");
    assert_eq!(
        moe.num_experts_per_tok,
        as_usize(&r["num_experts_per_tok"]),
        "{}",
        ctx("top-k")
    );
    match cfg.architecture {
        Architecture::DeepseekV2 | Architecture::DeepseekV3 => {
            assert_eq!(
                moe.num_experts,
                as_usize(&r["n_routed_experts"]),
                "{}",
                ctx("experts")
            );
            assert_eq!(moe.num_shared_experts, as_usize(&r["n_shared_experts"]));
            assert_eq!(
                moe.first_k_dense_replace,
                as_usize(&r["first_k_dense_replace"])
            );
            assert_eq!(
                moe.expert_intermediate_size,
                as_usize(&r["moe_intermediate_size"])
            );
            assert_eq!(
                moe.router.n_group,
                as_usize(&r["n_group"]),
                "{}",
                ctx("n_group")
            );
            assert_eq!(
                moe.router.topk_group,
                as_usize(&r["topk_group"]),
                "{}",
                ctx("topk_group")
            );
            let method = match moe.router.topk_method {
                TopkMethod::Greedy => "greedy",
                TopkMethod::GroupLimitedGreedy => "group_limited_greedy",
                TopkMethod::NoAuxTc => "noaux_tc",
            };
            assert_eq!(
                method,
                r["topk_method"].as_str().unwrap(),
                "{}",
                ctx("topk_method")
            );
            assert_eq!(
                moe.router.routed_scaling_factor as f64,
                r["routed_scaling_factor"].as_f64().unwrap() as f32 as f64
            );
        }
        Architecture::Qwen3Moe => {
            assert_eq!(moe.num_experts, as_usize(&r["num_experts"]));
            assert_eq!(
                moe.expert_intermediate_size,
                as_usize(&r["moe_intermediate_size"])
            );
            assert_eq!(moe.decoder_sparse_step, as_usize(&r["decoder_sparse_step"]));
        }
        Architecture::Mixtral => {
            assert_eq!(moe.num_experts, as_usize(&r["num_local_experts"]));
            assert_eq!(
                moe.expert_intermediate_size,
                as_usize(&r["intermediate_size"])
            );
        }
        other => panic!("{name}: unexpected {other}"),
    }
    if let Some(norm) = r["norm_topk_prob"].as_bool() {
        assert_eq!(moe.router.norm_topk_prob, norm, "{}", ctx("norm_topk_prob"));
    }
    if let Some(n) = r["num_mtp_layers"].as_u64() {
        assert_eq!(
            cfg.num_nextn_predict_layers as u64,
            n,
            "{}",
            ctx("mtp layers")
        );
    }
}

#[test]
fn hub_configs_match_transformers() {
    let reference = reference();
    for name in HUB {
        check_against_transformers(name, &hub(name), &reference["models"][name]);
    }
}

#[test]
fn transformers5_resaves_parse_the_same() {
    // The re-saved files use `rope_parameters` and `dtype` instead of `rope_scaling`/`torch_dtype`.
    for name in HUB {
        let text = read(fixtures().join("t5").join(format!("{name}.json")));
        let resaved = ModelConfig::from_hf_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resaved, hub(name), "{name}");
    }
}

#[test]
fn dense_families_match_transformers() {
    let reference = reference();
    let qwen = ModelConfig::from_hf_str(&read(
        fixtures().join("synthetic/R1-Distill-Qwen-1.5B-shape.json"),
    ))
    .unwrap();
    let r = &reference["models"]["R1-Distill-Qwen-1.5B-shape"];
    assert_eq!(qwen.architecture, Architecture::Qwen2);
    let Attention::Gqa(g) = &qwen.attention else {
        panic!("Qwen2 is GQA")
    };
    assert_eq!(
        (g.num_heads, g.num_kv_heads, g.head_dim),
        (12, as_usize(&r["num_key_value_heads"]), 128)
    );
    assert!(g.qkv_bias && !g.o_bias && !g.qk_norm);
    assert_eq!(g.sliding_window, None, "use_sliding_window is false");
    assert!(qwen.ffn.moe.is_none());
    assert_eq!(
        qwen.ffn.intermediate_size,
        as_usize(&r["intermediate_size"])
    );

    let llama = ModelConfig::from_hf_str(&read(
        fixtures().join("synthetic/R1-Distill-Llama-8B-shape.json"),
    ))
    .unwrap();
    let rp = &reference["models"]["R1-Distill-Llama-8B-shape"]["rope_parameters"];
    assert_eq!(llama.architecture, Architecture::Llama);
    assert_eq!(llama.rope.theta, 500000.0);
    assert_eq!(
        llama.rope.scaling,
        RopeScaling::Llama3 {
            factor: rp["factor"].as_f64().unwrap(),
            low_freq_factor: rp["low_freq_factor"].as_f64().unwrap(),
            high_freq_factor: rp["high_freq_factor"].as_f64().unwrap(),
            original_max_position_embeddings: as_usize(&rp["original_max_position_embeddings"]),
        }
    );
    let Attention::Gqa(g) = &llama.attention else {
        panic!("Llama is GQA")
    };
    assert!(!g.qkv_bias && !g.o_bias);
    assert!(!llama.rope.interleaved);
}

#[test]
fn family_facts() {
    let r1 = hub("deepseek-ai__DeepSeek-R1");
    assert_eq!(r1.architecture, Architecture::DeepseekV3);
    assert_eq!(r1.num_nextn_predict_layers, 1);
    assert_eq!(
        r1.weight_quantization,
        Some(WeightQuantization::Fp8 {
            format: Fp8Format::E4M3,
            block_size: Some([128, 128])
        })
    );
    assert_eq!(r1.torch_dtype.as_deref(), Some("bfloat16"));
    let moe = r1.ffn.moe.as_ref().unwrap();
    assert_eq!(moe.router.scoring, ScoringFunc::Sigmoid);
    assert!(moe.router.correction_bias && moe.router.norm_topk_prob);
    assert_eq!(moe.router.routed_scaling_factor, 2.5);
    let moe_layers: Vec<bool> = (0..5).map(|l| moe.is_moe_layer(l)).collect();
    assert_eq!(moe_layers, [false, false, false, true, true]);
    assert_eq!(moe.shared_intermediate_size(), 2048);

    let kimi = hub("moonshotai__Kimi-K2-Instruct");
    assert_eq!(
        kimi.architecture,
        Architecture::DeepseekV3,
        "kimi_k2 is the V3 architecture"
    );
    assert_eq!(kimi.num_nextn_predict_layers, 0);
    assert_eq!(kimi.rope.theta, 50000.0);

    let lite = hub("deepseek-ai__DeepSeek-V2-Lite");
    assert_eq!(lite.architecture, Architecture::DeepseekV2);
    let Attention::Mla(m) = &lite.attention else {
        panic!("V2-Lite is MLA")
    };
    assert_eq!(m.q_lora_rank, None);
    let moe = lite.ffn.moe.as_ref().unwrap();
    assert_eq!(
        (moe.router.scoring, moe.router.topk_method),
        (ScoringFunc::Softmax, TopkMethod::Greedy)
    );
    assert!(!moe.router.correction_bias && !moe.router.norm_topk_prob);
    assert_eq!(lite.num_nextn_predict_layers, 0);
    assert_eq!(moe.shared_intermediate_size(), 2816);

    let qwen = hub("Qwen__Qwen3-30B-A3B");
    let Attention::Gqa(g) = &qwen.attention else {
        panic!("Qwen3 is GQA")
    };
    assert!(g.qk_norm && !g.qkv_bias && !g.o_bias);
    assert_eq!(g.head_dim, 128, "explicit head_dim, not hidden/heads = 64");
    assert!((0..48).all(|l| qwen.ffn.moe.as_ref().unwrap().is_moe_layer(l)));

    let mixtral = hub("mistralai__Mixtral-8x7B-v0.1");
    let moe = mixtral.ffn.moe.as_ref().unwrap();
    assert!(moe.router.norm_topk_prob, "Mixtral renormalises its top-2");
    assert_eq!(moe.num_shared_experts, 0);
    assert_eq!(mixtral.weight_quantization, None);
}

#[test]
fn v32_and_v4_are_rejected_by_name() {
    for name in [
        "deepseek-ai__DeepSeek-V3.2",
        "deepseek-ai__DeepSeek-V4-Flash",
    ] {
        let text = read(
            reference_dir()
                .join("configs")
                .join(name)
                .join("config.json"),
        );
        let err = ModelConfig::from_hf_str(&text).unwrap_err();
        assert!(
            matches!(err, ConfigError::UnsupportedArchitecture { .. }),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("DeepseekV3") && msg.contains("ForCausalLM"),
            "{msg}"
        );
        assert!(
            msg.contains("DeepseekV3ForCausalLM") && msg.contains("MixtralForCausalLM"),
            "{msg}"
        );
    }
}

fn r1_json() -> Value {
    serde_json::from_str(&read(
        reference_dir().join("configs/deepseek-ai__DeepSeek-R1/config.json"),
    ))
    .unwrap()
}

#[test]
fn bad_configs_name_the_problem() {
    let mut j = r1_json();
    j.as_object_mut().unwrap().remove("hidden_size");
    let err = ModelConfig::from_hf_json(&j).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingKey { key } if key == "hidden_size"),
        "{err:?}"
    );
    assert!(err.to_string().contains("hidden_size"));

    let mut j = r1_json();
    j["num_hidden_layers"] = Value::from("sixty-one");
    let err = ModelConfig::from_hf_json(&j).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("num_hidden_layers") && msg.contains("integer") && msg.contains("string"),
        "{msg}"
    );

    let mut j = r1_json();
    j["architectures"] = serde_json::json!(["FooForCausalLM"]);
    j["model_type"] = Value::from("foo");
    let msg = ModelConfig::from_hf_json(&j).unwrap_err().to_string();
    assert!(
        msg.contains("FooForCausalLM") && msg.contains("Qwen3MoeForCausalLM"),
        "{msg}"
    );

    let mut j = r1_json();
    j["rope_scaling"] = serde_json::json!({"type": "linear"});
    let err = ModelConfig::from_hf_json(&j).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingKey { key } if key == "rope_scaling.factor"),
        "{err:?}"
    );

    let mut j = r1_json();
    j["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0});
    assert!(ModelConfig::from_hf_json(&j)
        .unwrap_err()
        .to_string()
        .contains("dynamic"));

    let mut j = r1_json();
    j["num_experts_per_tok"] = Value::from(300);
    let msg = ModelConfig::from_hf_json(&j).unwrap_err().to_string();
    assert!(msg.contains("num_experts_per_tok"), "{msg}");

    let mut j = r1_json();
    j.as_object_mut().unwrap().remove("q_lora_rank");
    assert!(ModelConfig::from_hf_json(&j)
        .unwrap_err()
        .to_string()
        .contains("q_lora_rank"));

    assert!(matches!(
        ModelConfig::from_hf_str("{ not json").unwrap_err(),
        ConfigError::Json { .. }
    ));
    assert!(ModelConfig::from_hf_str("[1, 2]")
        .unwrap_err()
        .to_string()
        .contains("object"));
    assert!(matches!(
        ModelConfig::from_hf_str("{}").unwrap_err(),
        ConfigError::MissingKey { key } if key == "architectures"
    ));
}

#[test]
fn eos_lists_and_partial_rotary() {
    let mut j = r1_json();
    j["eos_token_id"] = serde_json::json!([1, 7]);
    assert_eq!(
        ModelConfig::from_hf_json(&j).unwrap().eos_token_ids,
        vec![1, 7]
    );

    let text = read(fixtures().join("synthetic/R1-Distill-Llama-8B-shape.json"));
    let mut j: Value = serde_json::from_str(&text).unwrap();
    j["rope_parameters"]["partial_rotary_factor"] = Value::from(0.5);
    assert_eq!(ModelConfig::from_hf_json(&j).unwrap().rope.rotary_dim, 64);
}

/// GGUF metadata held in a map, as the GGUF reader would hand it over.
#[derive(Default)]
struct Meta(HashMap<String, Val>);

enum Val {
    U(u64),
    F(f64),
    S(String),
    B(bool),
    Arr(usize),
}

impl Meta {
    fn u(mut self, k: &str, v: u64) -> Self {
        self.0.insert(k.into(), Val::U(v));
        self
    }
    fn f(mut self, k: &str, v: f64) -> Self {
        self.0.insert(k.into(), Val::F(v));
        self
    }
    fn s(mut self, k: &str, v: &str) -> Self {
        self.0.insert(k.into(), Val::S(v.into()));
        self
    }
    fn b(mut self, k: &str, v: bool) -> Self {
        self.0.insert(k.into(), Val::B(v));
        self
    }
    fn arr(mut self, k: &str, n: usize) -> Self {
        self.0.insert(k.into(), Val::Arr(n));
        self
    }
    fn without(mut self, k: &str) -> Self {
        self.0.remove(k);
        self
    }
}

impl GgufKeyValues for Meta {
    fn get_u64(&self, key: &str) -> Option<u64> {
        match self.0.get(key)? {
            Val::U(v) => Some(*v),
            _ => None,
        }
    }
    fn get_f64(&self, key: &str) -> Option<f64> {
        match self.0.get(key)? {
            Val::F(v) => Some(*v),
            Val::U(v) => Some(*v as f64),
            _ => None,
        }
    }
    fn get_str(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            Val::S(v) => Some(v),
            _ => None,
        }
    }
    fn get_bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key)? {
            Val::B(v) => Some(*v),
            _ => None,
        }
    }
    fn array_len(&self, key: &str) -> Option<usize> {
        match self.0.get(key)? {
            Val::Arr(n) => Some(*n),
            _ => None,
        }
    }
}

/// The metadata llama.cpp's converter writes for DeepSeek-R1 (MLA split into k_b/v_b).
fn r1_gguf() -> Meta {
    Meta::default()
        .s("general.architecture", "deepseek2")
        .u("deepseek2.block_count", 61)
        .u("deepseek2.context_length", 163840)
        .u("deepseek2.embedding_length", 7168)
        .u("deepseek2.feed_forward_length", 18432)
        .u("deepseek2.attention.head_count", 128)
        .u("deepseek2.attention.head_count_kv", 1)
        .f("deepseek2.rope.freq_base", 10000.0)
        .f("deepseek2.attention.layer_norm_rms_epsilon", 1e-6)
        .u("deepseek2.expert_used_count", 8)
        .u("deepseek2.expert_count", 256)
        .u("deepseek2.leading_dense_block_count", 3)
        .u("deepseek2.vocab_size", 129280)
        .u("deepseek2.attention.q_lora_rank", 1536)
        .u("deepseek2.attention.kv_lora_rank", 512)
        .u("deepseek2.attention.key_length", 576)
        .u("deepseek2.attention.value_length", 512)
        .u("deepseek2.attention.key_length_mla", 192)
        .u("deepseek2.attention.value_length_mla", 128)
        .u("deepseek2.expert_feed_forward_length", 2048)
        .u("deepseek2.expert_shared_count", 1)
        .f("deepseek2.expert_weights_scale", 2.5)
        .b("deepseek2.expert_weights_norm", true)
        .u("deepseek2.expert_gating_func", 2)
        .u("deepseek2.expert_group_count", 8)
        .u("deepseek2.expert_group_used_count", 4)
        .u("deepseek2.rope.dimension_count", 64)
        .s("deepseek2.rope.scaling.type", "yarn")
        .f("deepseek2.rope.scaling.factor", 40.0)
        .u("deepseek2.rope.scaling.original_context_length", 4096)
        .f("deepseek2.rope.scaling.yarn_log_multiplier", 0.1)
        .u("tokenizer.ggml.bos_token_id", 0)
        .u("tokenizer.ggml.eos_token_id", 1)
}

#[test]
fn gguf_deepseek2_matches_the_hub_config() {
    let g = ModelConfig::from_gguf(&r1_gguf()).unwrap();
    let h = hub("deepseek-ai__DeepSeek-R1");
    assert_eq!(g.architecture, h.architecture);
    assert_eq!(g.attention, h.attention);
    assert_eq!(g.rope, h.rope);
    assert_eq!(g.ffn, h.ffn);
    assert_eq!(
        (
            g.vocab_size,
            g.hidden_size,
            g.num_hidden_layers,
            g.max_position_embeddings
        ),
        (
            h.vocab_size,
            h.hidden_size,
            h.num_hidden_layers,
            h.max_position_embeddings
        )
    );
    assert_eq!(
        (g.bos_token_id, &g.eos_token_ids),
        (h.bos_token_id, &h.eos_token_ids)
    );
    // MTP layers are not converted.
    assert_eq!(g.num_nextn_predict_layers, 0);

    // Older files: per-head dims in key_length/value_length, no gating func (= softmax, V2).
    let lite = Meta::default()
        .s("general.architecture", "deepseek2")
        .u("deepseek2.block_count", 27)
        .u("deepseek2.context_length", 163840)
        .u("deepseek2.embedding_length", 2048)
        .u("deepseek2.feed_forward_length", 10944)
        .u("deepseek2.attention.head_count", 16)
        .u("deepseek2.attention.head_count_kv", 16)
        .f("deepseek2.attention.layer_norm_rms_epsilon", 1e-6)
        .u("deepseek2.expert_used_count", 6)
        .u("deepseek2.expert_count", 64)
        .u("deepseek2.leading_dense_block_count", 1)
        .u("deepseek2.attention.kv_lora_rank", 512)
        .u("deepseek2.attention.key_length", 192)
        .u("deepseek2.attention.value_length", 128)
        .u("deepseek2.expert_feed_forward_length", 1408)
        .u("deepseek2.expert_shared_count", 2)
        .f("deepseek2.expert_weights_scale", 1.0)
        .u("deepseek2.rope.dimension_count", 64)
        .s("deepseek2.rope.scaling.type", "yarn")
        .f("deepseek2.rope.scaling.factor", 40.0)
        .u("deepseek2.rope.scaling.original_context_length", 4096)
        .f("deepseek2.rope.scaling.yarn_log_multiplier", 0.0707)
        .arr("tokenizer.ggml.tokens", 102400);
    let g = ModelConfig::from_gguf(&lite).unwrap();
    let h = hub("deepseek-ai__DeepSeek-V2-Lite");
    assert_eq!(g.architecture, Architecture::DeepseekV2);
    assert_eq!(g.attention, h.attention);
    assert_eq!(g.ffn, h.ffn);
    assert_eq!(g.vocab_size, 102400, "falls back to the token list length");
    let RopeScaling::Yarn { mscale_all_dim, .. } = g.rope.scaling else {
        panic!("yarn")
    };
    assert!((mscale_all_dim.unwrap() - 0.707).abs() < 1e-9);
}

#[test]
fn gguf_gqa_families() {
    let qwen3 = Meta::default()
        .s("general.architecture", "qwen3moe")
        .u("qwen3moe.block_count", 48)
        .u("qwen3moe.context_length", 40960)
        .u("qwen3moe.embedding_length", 2048)
        .u("qwen3moe.feed_forward_length", 6144)
        .u("qwen3moe.attention.head_count", 32)
        .u("qwen3moe.attention.head_count_kv", 4)
        .f("qwen3moe.rope.freq_base", 1e6)
        .f("qwen3moe.attention.layer_norm_rms_epsilon", 1e-6)
        .u("qwen3moe.expert_used_count", 8)
        .u("qwen3moe.attention.key_length", 128)
        .u("qwen3moe.attention.value_length", 128)
        .u("qwen3moe.expert_count", 128)
        .u("qwen3moe.expert_feed_forward_length", 768)
        .arr("tokenizer.ggml.tokens", 151936);
    let g = ModelConfig::from_gguf(&qwen3).unwrap();
    let h = hub("Qwen__Qwen3-30B-A3B");
    assert_eq!(
        (g.architecture, &g.attention, &g.rope),
        (h.architecture, &h.attention, &h.rope)
    );
    assert_eq!(g.ffn, h.ffn);

    let mixtral = Meta::default()
        .s("general.architecture", "llama")
        .u("llama.block_count", 32)
        .u("llama.context_length", 32768)
        .u("llama.embedding_length", 4096)
        .u("llama.feed_forward_length", 14336)
        .u("llama.attention.head_count", 32)
        .u("llama.attention.head_count_kv", 8)
        .f("llama.rope.freq_base", 1e6)
        .f("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .u("llama.expert_count", 8)
        .u("llama.expert_used_count", 2)
        .u("llama.rope.dimension_count", 128)
        .u("llama.vocab_size", 32000);
    let g = ModelConfig::from_gguf(&mixtral).unwrap();
    let h = hub("mistralai__Mixtral-8x7B-v0.1");
    assert_eq!(
        (g.architecture, &g.attention, &g.rope),
        (h.architecture, &h.attention, &h.rope)
    );
    assert_eq!(g.ffn, h.ffn);

    let dense = mixtral
        .without("llama.expert_count")
        .without("llama.expert_used_count");
    let g = ModelConfig::from_gguf(&dense).unwrap();
    assert_eq!(g.architecture, Architecture::Llama);
    assert!(g.ffn.moe.is_none());

    let qwen2 = Meta::default()
        .s("general.architecture", "qwen2")
        .u("qwen2.block_count", 28)
        .u("qwen2.context_length", 131072)
        .u("qwen2.embedding_length", 1536)
        .u("qwen2.feed_forward_length", 8960)
        .u("qwen2.attention.head_count", 12)
        .u("qwen2.attention.head_count_kv", 2)
        .f("qwen2.rope.freq_base", 10000.0)
        .f("qwen2.attention.layer_norm_rms_epsilon", 1e-6)
        .arr("tokenizer.ggml.tokens", 151936);
    let g = ModelConfig::from_gguf(&qwen2).unwrap();
    let h = ModelConfig::from_hf_str(&read(
        fixtures().join("synthetic/R1-Distill-Qwen-1.5B-shape.json"),
    ))
    .unwrap();
    assert_eq!(
        (g.architecture, &g.attention, &g.rope, &g.ffn),
        (h.architecture, &h.attention, &h.rope, &h.ffn)
    );
}

#[test]
fn gguf_errors_name_the_key() {
    let err =
        ModelConfig::from_gguf(&r1_gguf().without("deepseek2.attention.kv_lora_rank")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingKey { key } if key == "deepseek2.attention.kv_lora_rank"),
        "{err:?}"
    );

    let err = ModelConfig::from_gguf(&r1_gguf().s("general.architecture", "mamba")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("mamba") && msg.contains("deepseek2") && msg.contains("qwen3moe"),
        "{msg}"
    );

    let err = ModelConfig::from_gguf(&r1_gguf().u("deepseek2.expert_gating_func", 3)).unwrap_err();
    assert!(err.to_string().contains("expert_gating_func"), "{err}");

    let err = ModelConfig::from_gguf(&r1_gguf().without("deepseek2.vocab_size")).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");

    let err = ModelConfig::from_gguf(&Meta::default()).unwrap_err();
    assert!(matches!(&err, ConfigError::MissingKey { key } if key == "general.architecture"));

    let err =
        ModelConfig::from_gguf(&r1_gguf().u("deepseek2.nextn_predict_layers", 99)).unwrap_err();
    assert!(err.to_string().contains("nextn_predict_layers"), "{err}");
}

/// Which layers slide, as transformers 5.24 decides: Qwen2 from `max_window_layers` on, only
/// with `use_sliding_window`; Qwen3-MoE every layer (it has no `max_window_layers`); Mixtral
/// every layer when `sliding_window` is set; Llama never (its classes have no window).
#[test]
fn sliding_window_layers_follow_transformers() {
    let window = |fixture: &str, keys: Value| {
        let path = frugal_testdata::fixtures_dir()
            .join("models")
            .join(fixture)
            .join("config.json");
        let mut json: Value = serde_json::from_str(&read(path)).unwrap();
        for (k, v) in keys.as_object().unwrap() {
            json[k] = v.clone();
        }
        let cfg = ModelConfig::from_hf_json(&json).unwrap();
        let Attention::Gqa(g) = cfg.attention else {
            panic!("{fixture} is GQA")
        };
        g.sliding_window.map(|w| (w.size, w.first_layer))
    };
    let on = serde_json::json!({"use_sliding_window": true, "sliding_window": 8, "max_window_layers": 48});
    assert_eq!(window("qwen2", on.clone()), Some((8, 48)));
    assert_eq!(window("qwen3-moe", on.clone()), Some((8, 0)));
    assert_eq!(
        window("qwen2", serde_json::json!({"sliding_window": 8})),
        None
    );
    assert_eq!(
        window("mixtral", serde_json::json!({"sliding_window": 8})),
        Some((8, 0))
    );
    assert_eq!(window("llama", on), None);
}
