//! `config.json` (Hugging Face) → [`ModelConfig`].
//!
//! Defaults for keys a file may omit follow the transformers 5 configuration classes of each
//! family (`configuration_deepseek_v2.py`, `_v3`, `qwen2`, `llama`, `qwen3_moe`, `mixtral`) and
//! `modeling_rope_utils.py`. Both rope spellings are read: hub files' `rope_theta` +
//! `rope_scaling {type | rope_type, ...}` and transformers 5's `rope_parameters {rope_type,
//! rope_theta, ...}`.

use serde_json::{Map, Value};

use super::{
    validate, Architecture, Attention, ConfigError, FeedForward, Fp8Format, GqaConfig, MlaConfig,
    ModelConfig, MoeConfig, Rope, RopeScaling, RouterConfig, ScoringFunc, SlidingWindow,
    TopkMethod, WeightQuantization,
};

/// Families recognised but not described yet: V3.2's sparse attention and V4's shared-KV
/// attention change the attention block, so reading them as V3 would be wrong.
const NOT_YET: &[&str] = &[
    "deepseek_v32",
    "DeepseekV32ForCausalLM",
    "deepseek_v4",
    "DeepseekV4ForCausalLM",
];

impl ModelConfig {
    /// Parse the text of a `config.json`.
    pub fn from_hf_str(text: &str) -> Result<Self, ConfigError> {
        let json: Value =
            serde_json::from_str(text).map_err(|source| ConfigError::Json { source })?;
        Self::from_hf_json(&json)
    }

    /// Build the description from a parsed `config.json`.
    pub fn from_hf_json(json: &Value) -> Result<Self, ConfigError> {
        let map = json.as_object().ok_or_else(|| ConfigError::WrongType {
            key: "(top level)".into(),
            expected: "a JSON object",
            found: json_type(json).into(),
        })?;
        let o = Obj { map, prefix: "" };
        let architecture = resolve_architecture(&o)?;
        let cfg = parse(&o, architecture)?;
        validate(&cfg)?;
        Ok(cfg)
    }
}

fn resolve_architecture(o: &Obj<'_>) -> Result<Architecture, ConfigError> {
    let model_type = o.opt_str("model_type")?;
    let first = match o.get("architectures") {
        None => None,
        Some(Value::Array(a)) => match a.first() {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(v) => return Err(o.wrong("architectures", "an array of strings", v)),
        },
        Some(v) => return Err(o.wrong("architectures", "an array of strings", v)),
    };
    for name in [first, model_type].into_iter().flatten() {
        if NOT_YET.contains(&name) {
            return Err(unsupported(name));
        }
    }
    let by_class = first.and_then(|a| match a {
        "DeepseekV2ForCausalLM" => Some(Architecture::DeepseekV2),
        "DeepseekV3ForCausalLM" => Some(Architecture::DeepseekV3),
        "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
        "LlamaForCausalLM" => Some(Architecture::Llama),
        "Qwen3MoeForCausalLM" => Some(Architecture::Qwen3Moe),
        "MixtralForCausalLM" => Some(Architecture::Mixtral),
        _ => None,
    });
    let by_type = model_type.and_then(|t| match t {
        "deepseek_v2" => Some(Architecture::DeepseekV2),
        // Kimi-K2 ships its own model_type but is the DeepSeek-V3 architecture.
        "deepseek_v3" | "kimi_k2" => Some(Architecture::DeepseekV3),
        "qwen2" => Some(Architecture::Qwen2),
        "llama" => Some(Architecture::Llama),
        "qwen3_moe" => Some(Architecture::Qwen3Moe),
        "mixtral" => Some(Architecture::Mixtral),
        _ => None,
    });
    match (by_class, by_type, first, model_type) {
        (Some(a), _, _, _) | (None, Some(a), _, _) => Ok(a),
        (None, None, Some(name), _) | (None, None, None, Some(name)) => Err(unsupported(name)),
        (None, None, None, None) => Err(ConfigError::MissingKey {
            key: "architectures".into(),
        }),
    }
}

fn unsupported(name: &str) -> ConfigError {
    ConfigError::UnsupportedArchitecture {
        name: name.to_string(),
        supported: Architecture::SUPPORTED_HF,
    }
}

fn parse(o: &Obj<'_>, arch: Architecture) -> Result<ModelConfig, ConfigError> {
    use Architecture as A;
    if let Some(act) = o.opt_str("hidden_act")? {
        if act != "silu" {
            return Err(ConfigError::InvalidValue {
                key: "hidden_act".into(),
                value: format!("{act:?}"),
                reason: "only SwiGLU (silu) MLPs are supported".into(),
            });
        }
    }
    let vocab_size = o.req_usize("vocab_size")?;
    let hidden_size = o.req_usize("hidden_size")?;
    let num_hidden_layers = o.req_usize("num_hidden_layers")?;
    let num_heads = o.req_usize("num_attention_heads")?;
    let intermediate_size = o.req_usize("intermediate_size")?;
    let max_position_embeddings = o.usize_or(
        "max_position_embeddings",
        match arch {
            A::DeepseekV2 | A::Llama => 2048,
            A::DeepseekV3 => 4096,
            A::Qwen2 | A::Qwen3Moe => 32768,
            A::Mixtral => 4096 * 32,
        },
    )?;
    let rms_norm_eps = o.f64_or("rms_norm_eps", if arch == A::Mixtral { 1e-5 } else { 1e-6 })?;
    let attention_bias = o.bool_or("attention_bias", false)?;

    let (attention, rotary_dim, interleaved) = if arch.is_deepseek() {
        let mla = MlaConfig {
            num_heads,
            q_lora_rank: o.opt_usize("q_lora_rank")?.filter(|&r| r > 0),
            kv_lora_rank: o.req_usize("kv_lora_rank")?,
            qk_nope_head_dim: o.req_usize("qk_nope_head_dim")?,
            qk_rope_head_dim: o.req_usize("qk_rope_head_dim")?,
            v_head_dim: o.req_usize("v_head_dim")?,
            attention_bias,
        };
        if !o.has("q_lora_rank") {
            return Err(ConfigError::MissingKey {
                key: "q_lora_rank".into(),
            });
        }
        let rot = mla.qk_rope_head_dim;
        // V2 rotates consecutive pairs through a complex view; V3 calls it `rope_interleave`.
        let interleaved = arch == A::DeepseekV2 || o.bool_or("rope_interleave", true)?;
        (Attention::Mla(mla), rot, interleaved)
    } else {
        let num_kv_heads = match arch {
            // Their classes default to GQA shapes, so a file must say which.
            A::Mixtral | A::Qwen3Moe => o.req_usize("num_key_value_heads")?,
            _ => o.opt_usize("num_key_value_heads")?.unwrap_or(num_heads),
        };
        let head_dim = match o.opt_usize("head_dim")? {
            Some(d) => d,
            None if num_heads > 0 && hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(ConfigError::InvalidValue {
                    key: "num_attention_heads".into(),
                    value: num_heads.to_string(),
                    reason: format!(
                        "must divide hidden_size ({hidden_size}) when head_dim is absent"
                    ),
                })
            }
        };
        let sliding_window = parse_sliding_window(o, arch)?;
        let gqa = GqaConfig {
            num_heads,
            num_kv_heads,
            head_dim,
            qkv_bias: arch == A::Qwen2 || attention_bias,
            o_bias: arch != A::Qwen2 && attention_bias,
            qk_norm: arch == A::Qwen3Moe,
            sliding_window,
        };
        let partial = partial_rotary_factor(o)?;
        let rot = (head_dim as f64 * partial) as usize;
        (Attention::Gqa(gqa), rot, false)
    };

    let rope = Rope {
        theta: 0.0,
        scaling: RopeScaling::None,
        interleaved,
        rotary_dim,
    };
    let rope = parse_rope(o, arch, rope, max_position_embeddings)?;
    let moe = parse_moe(o, arch, intermediate_size)?;
    let num_nextn_predict_layers = if arch == A::DeepseekV3 {
        // transformers 5 aliases `num_mtp_layers`; both the hub remote code and transformers
        // default to one MTP layer.
        match o.opt_usize("num_nextn_predict_layers")? {
            Some(n) => n,
            None => o.usize_or("num_mtp_layers", 1)?,
        }
    } else {
        0
    };

    Ok(ModelConfig {
        architecture: arch,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        max_position_embeddings,
        rms_norm_eps,
        tie_word_embeddings: o.bool_or("tie_word_embeddings", false)?,
        attention,
        rope,
        ffn: FeedForward {
            intermediate_size,
            mlp_bias: arch == A::Llama && o.bool_or("mlp_bias", false)?,
            moe,
        },
        bos_token_id: o.opt_u32("bos_token_id")?,
        eos_token_ids: parse_eos(o)?,
        num_nextn_predict_layers,
        weight_quantization: parse_quantization(o)?,
        torch_dtype: match o.opt_str("torch_dtype")? {
            Some(d) => Some(d.to_string()),
            None => o.opt_str("dtype")?.map(str::to_string),
        },
    })
}

fn parse_sliding_window(
    o: &Obj<'_>,
    arch: Architecture,
) -> Result<Option<SlidingWindow>, ConfigError> {
    use Architecture as A;
    Ok(match arch {
        // Qwen's classes ignore `sliding_window` unless `use_sliding_window`. Qwen2 windows
        // the layers from `max_window_layers` on (its `layer_types`); Qwen3-MoE windows every
        // layer and has no `max_window_layers` (transformers 5.24).
        A::Qwen2 | A::Qwen3Moe if o.bool_or("use_sliding_window", false)? => Some(SlidingWindow {
            size: o.usize_or("sliding_window", 4096)?,
            first_layer: if arch == A::Qwen2 {
                o.usize_or("max_window_layers", 28)?
            } else {
                0
            },
        }),
        // Llama's classes have no sliding window at all, whatever the file says.
        A::Mixtral => o.opt_usize("sliding_window")?.map(|size| SlidingWindow {
            size,
            first_layer: 0,
        }),
        _ => None,
    })
}

fn partial_rotary_factor(o: &Obj<'_>) -> Result<f64, ConfigError> {
    if let Some(p) = o.opt_obj("rope_parameters")? {
        if let Some(f) = p.opt_f64("partial_rotary_factor")? {
            return check_fraction(&p, f);
        }
    }
    match o.opt_f64("partial_rotary_factor")? {
        Some(f) => check_fraction(o, f),
        None => Ok(1.0),
    }
}

fn check_fraction(o: &Obj<'_>, f: f64) -> Result<f64, ConfigError> {
    if f > 0.0 && f <= 1.0 {
        Ok(f)
    } else {
        Err(ConfigError::InvalidValue {
            key: o.key("partial_rotary_factor"),
            value: f.to_string(),
            reason: "must be in (0, 1]".into(),
        })
    }
}

fn parse_rope(
    o: &Obj<'_>,
    arch: Architecture,
    mut rope: Rope,
    max_position_embeddings: usize,
) -> Result<Rope, ConfigError> {
    let default_theta = if arch == Architecture::Mixtral {
        1e6
    } else {
        10_000.0
    };
    let top_theta = o.opt_f64("rope_theta")?;
    // transformers 5 writes one `rope_parameters` object; hub files write `rope_scaling`.
    let params = match o.opt_obj("rope_parameters")? {
        Some(p) => Some(p),
        None => o.opt_obj("rope_scaling")?,
    };
    let Some(p) = params else {
        rope.theta = top_theta.unwrap_or(default_theta);
        return Ok(rope);
    };
    rope.theta = match p.opt_f64("rope_theta")? {
        Some(t) => t,
        None => top_theta.unwrap_or(default_theta),
    };
    let rope_type = match p.opt_str("rope_type")? {
        Some(t) => Some(t),
        None => p.opt_str("type")?,
    };
    rope.scaling = match rope_type.unwrap_or("default") {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: p.req_f64("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: p.req_f64("factor")?,
            low_freq_factor: p.req_f64("low_freq_factor")?,
            high_freq_factor: p.req_f64("high_freq_factor")?,
            original_max_position_embeddings: p.req_usize("original_max_position_embeddings")?,
        },
        "yarn" => {
            let original =
                p.usize_or("original_max_position_embeddings", max_position_embeddings)?;
            // transformers derives a missing factor from the two context lengths.
            let factor = match p.opt_f64("factor")? {
                Some(f) => f,
                None if original > 0 => max_position_embeddings as f64 / original as f64,
                None => {
                    return Err(ConfigError::MissingKey {
                        key: p.key("factor"),
                    })
                }
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                // `or 32` / `or 1` in transformers: a 0 also means the default.
                beta_fast: p
                    .opt_f64("beta_fast")?
                    .filter(|&b| b != 0.0)
                    .unwrap_or(32.0),
                beta_slow: p.opt_f64("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                mscale: p.opt_f64("mscale")?,
                mscale_all_dim: p.opt_f64("mscale_all_dim")?,
                attention_factor: p.opt_f64("attention_factor")?,
            }
        }
        other => {
            return Err(ConfigError::UnsupportedRopeScaling {
                rope_type: other.to_string(),
            })
        }
    };
    Ok(rope)
}

fn parse_moe(
    o: &Obj<'_>,
    arch: Architecture,
    intermediate_size: usize,
) -> Result<Option<MoeConfig>, ConfigError> {
    use Architecture as A;
    let plain_router = |norm_topk_prob| RouterConfig {
        scoring: ScoringFunc::Softmax,
        topk_method: TopkMethod::Greedy,
        n_group: 1,
        topk_group: 1,
        norm_topk_prob,
        routed_scaling_factor: 1.0,
        correction_bias: false,
    };
    let moe = match arch {
        A::Qwen2 | A::Llama => return Ok(None),
        A::Mixtral => MoeConfig {
            num_experts: o.req_usize_any(&["num_local_experts", "num_experts"])?,
            num_experts_per_tok: o.req_usize("num_experts_per_tok")?,
            // Mixtral's experts are full-width MLPs.
            expert_intermediate_size: intermediate_size,
            num_shared_experts: 0,
            first_k_dense_replace: 0,
            moe_layer_freq: 1,
            mlp_only_layers: Vec::new(),
            decoder_sparse_step: 1,
            // softmax(top-k logits) = top-k of softmax, renormalised.
            router: plain_router(true),
        },
        A::Qwen3Moe => MoeConfig {
            num_experts: o.req_usize_any(&["num_experts", "num_local_experts"])?,
            num_experts_per_tok: o.req_usize("num_experts_per_tok")?,
            expert_intermediate_size: o.req_usize("moe_intermediate_size")?,
            num_shared_experts: 0,
            first_k_dense_replace: 0,
            moe_layer_freq: 1,
            mlp_only_layers: o.opt_usize_list("mlp_only_layers")?.unwrap_or_default(),
            decoder_sparse_step: o.usize_or("decoder_sparse_step", 1)?,
            router: plain_router(o.bool_or("norm_topk_prob", false)?),
        },
        A::DeepseekV2 | A::DeepseekV3 => {
            let v3 = arch == A::DeepseekV3;
            let scoring =
                match o
                    .opt_str("scoring_func")?
                    .unwrap_or(if v3 { "sigmoid" } else { "softmax" })
                {
                    "softmax" => ScoringFunc::Softmax,
                    "sigmoid" => ScoringFunc::Sigmoid,
                    other => {
                        return Err(o.invalid("scoring_func", other, "expected softmax or sigmoid"))
                    }
                };
            let topk_method =
                match o
                    .opt_str("topk_method")?
                    .unwrap_or(if v3 { "noaux_tc" } else { "greedy" })
                {
                    "greedy" => TopkMethod::Greedy,
                    "group_limited_greedy" => TopkMethod::GroupLimitedGreedy,
                    "noaux_tc" => TopkMethod::NoAuxTc,
                    other => {
                        return Err(o.invalid(
                            "topk_method",
                            other,
                            "expected greedy, group_limited_greedy or noaux_tc",
                        ))
                    }
                };
            if !o.has("n_shared_experts") {
                return Err(ConfigError::MissingKey {
                    key: "n_shared_experts".into(),
                });
            }
            MoeConfig {
                num_experts: o.req_usize_any(&[
                    "n_routed_experts",
                    "num_local_experts",
                    "num_experts",
                ])?,
                num_experts_per_tok: o.req_usize("num_experts_per_tok")?,
                expert_intermediate_size: o.req_usize("moe_intermediate_size")?,
                num_shared_experts: o.opt_usize("n_shared_experts")?.unwrap_or(0),
                first_k_dense_replace: o.req_usize("first_k_dense_replace")?,
                moe_layer_freq: o.usize_or("moe_layer_freq", 1)?,
                mlp_only_layers: Vec::new(),
                decoder_sparse_step: 1,
                router: RouterConfig {
                    scoring,
                    topk_method,
                    n_group: o
                        .opt_usize("n_group")?
                        .unwrap_or(if v3 && !o.has("n_group") { 8 } else { 1 }),
                    topk_group: o
                        .opt_usize("topk_group")?
                        .unwrap_or(if v3 && !o.has("topk_group") { 4 } else { 1 }),
                    norm_topk_prob: o.bool_or("norm_topk_prob", v3)?,
                    routed_scaling_factor: o
                        .f64_or("routed_scaling_factor", if v3 { 2.5 } else { 1.0 })?
                        as f32,
                    correction_bias: topk_method == TopkMethod::NoAuxTc,
                },
            }
        }
    };
    Ok(Some(moe))
}

fn parse_eos(o: &Obj<'_>) -> Result<Vec<u32>, ConfigError> {
    match o.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                as_u32(v).ok_or_else(|| o.wrong("eos_token_id", "a token id or a list of them", v))
            })
            .collect(),
        Some(v) => Ok(vec![as_u32(v).ok_or_else(|| {
            o.wrong("eos_token_id", "a token id or a list of them", v)
        })?]),
    }
}

fn parse_quantization(o: &Obj<'_>) -> Result<Option<WeightQuantization>, ConfigError> {
    let Some(q) = o.opt_obj("quantization_config")? else {
        return Ok(None);
    };
    let method = q.req_str("quant_method")?;
    if method != "fp8" {
        return Ok(Some(WeightQuantization::Other {
            method: method.to_string(),
        }));
    }
    let format = match q.opt_str("fmt")?.unwrap_or("e4m3") {
        "e4m3" | "float8_e4m3fn" => Fp8Format::E4M3,
        "e5m2" | "float8_e5m2" => Fp8Format::E5M2,
        other => return Err(q.invalid("fmt", other, "expected e4m3 or e5m2")),
    };
    let block_size = match q.opt_usize_list("weight_block_size")? {
        None => None,
        Some(b) if b.len() == 2 && b[0] > 0 && b[1] > 0 => Some([b[0], b[1]]),
        Some(b) => {
            return Err(q.invalid(
                "weight_block_size",
                &format!("{b:?}"),
                "expected [rows, cols]",
            ))
        }
    };
    Ok(Some(WeightQuantization::Fp8 { format, block_size }))
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed look-ups in one JSON object. `null` counts as absent, as transformers treats it.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    /// Dotted path of this object, for error messages (`rope_scaling.`).
    prefix: &'static str,
}

impl<'a> Obj<'a> {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> ConfigError {
        let shown = found.to_string();
        let shown = if shown.chars().count() > 40 {
            format!("{}…", shown.chars().take(40).collect::<String>())
        } else {
            shown
        };
        ConfigError::WrongType {
            key: self.key(key),
            expected,
            found: format!("{} {shown}", json_type(found)),
        }
    }

    fn invalid(&self, key: &str, value: &str, reason: &str) -> ConfigError {
        ConfigError::InvalidValue {
            key: self.key(key),
            value: format!("{value:?}"),
            reason: reason.to_string(),
        }
    }

    fn missing(&self, key: &str) -> ConfigError {
        ConfigError::MissingKey { key: self.key(key) }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                // A float with no fraction (`4096.0`) is an integer written loosely.
                None => match v.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as usize)),
                    _ => Err(self.wrong(key, "a non-negative integer", v)),
                },
            },
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize, ConfigError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// The first of several spellings that is present (transformers' `attribute_map` aliases:
    /// a transformers 5 re-save writes Qwen3-MoE's `num_experts` as `num_local_experts`).
    /// A missing key is reported by its first spelling.
    fn req_usize_any(&self, keys: &[&str]) -> Result<usize, ConfigError> {
        for key in keys {
            if let Some(v) = self.opt_usize(key)? {
                return Ok(v);
            }
        }
        Err(self.missing(keys[0]))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_u32(v)
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a token id", v)),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    fn req_f64(&self, key: &str) -> Result<f64, ConfigError> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.wrong(key, "a boolean", v)),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_usize_list(&self, key: &str) -> Result<Option<Vec<usize>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| self.wrong(key, "an array of non-negative integers", v))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.wrong(key, "an array of non-negative integers", v)),
        }
    }

    /// A nested object, such as `rope_scaling`; its keys are reported as `rope_scaling.KEY`.
    fn opt_obj(&self, key: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                map,
                prefix: match key {
                    "rope_parameters" => "rope_parameters.",
                    "rope_scaling" => "rope_scaling.",
                    "quantization_config" => "quantization_config.",
                    _ => "",
                },
            })),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }
}
