//! GGUF metadata → [`ModelConfig`].
//!
//! Key names are gguf-py's `Keys.LLM.*`, `Keys.Attention.*`, `Keys.Rope.*` (gguf 0.19
//! `constants.py`), prefixed with `general.architecture`. Values as llama.cpp's
//! `convert_hf_to_gguf.py` writes them (facts, checked against its source):
//!
//! - `deepseek2` holds DeepSeek V2, V2-Lite, V3, R1 and Kimi-K2. `expert_gating_func` 2
//!   (sigmoid) means the V3 router (bias-steered `noaux_tc`); 1 or absent (older V2 files) means
//!   softmax. MTP layers are not converted; if `nextn_predict_layers` is present the
//!   `block_count` includes them and they are subtracted here.
//! - MLA head dims: files converted for the absorbed (MQA) form write `key_length =
//!   kv_lora_rank + rope`, `value_length = kv_lora_rank`, `head_count_kv = 1` and keep the
//!   per-head dims in `key_length_mla` / `value_length_mla`; older files write the per-head dims
//!   in `key_length` / `value_length`. Either way `qk_nope_head_dim = key − rope dims`.
//! - YaRN: `rope.scaling.yarn_log_multiplier` is `0.1 * mscale_all_dim` for `deepseek2`.
//! - `llama` with `expert_count` is Mixtral. Llama 3 rope scaling is not in the metadata: the
//!   converter bakes it into a `rope_freqs.weight` tensor of per-frequency divisors, so the
//!   config says [`RopeScaling::None`] and the model must apply that tensor when present.
//! - Whether the LM head is tied is not in the metadata either (no `output.weight` tensor means
//!   tied); `tie_word_embeddings` is `false` here and the loader corrects it from the tensors.

use super::{
    validate, Architecture, Attention, ConfigError, FeedForward, GqaConfig, MlaConfig, ModelConfig,
    MoeConfig, Rope, RopeScaling, RouterConfig, ScoringFunc, TopkMethod,
};

/// Read access to GGUF key/value metadata. The GGUF reader implements it; tests use a map.
///
/// Getters return `None` when the key is absent or holds another type. `get_u64` should accept
/// every integer type that holds a non-negative value, and `get_f64` every float or integer type.
pub trait GgufKeyValues {
    /// An integer value.
    fn get_u64(&self, key: &str) -> Option<u64>;
    /// A floating-point value.
    fn get_f64(&self, key: &str) -> Option<f64>;
    /// A string value.
    fn get_str(&self, key: &str) -> Option<&str>;
    /// A boolean value.
    fn get_bool(&self, key: &str) -> Option<bool>;
    /// The length of an array value.
    fn array_len(&self, key: &str) -> Option<usize>;
}

/// Look-ups of `{arch}.KEY` with errors naming the full key.
struct Kv<'a> {
    meta: &'a dyn GgufKeyValues,
    arch: &'a str,
}

impl Kv<'_> {
    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.meta.get_u64(&self.key(key)) {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| ConfigError::InvalidValue {
                    key: self.key(key),
                    value: v.to_string(),
                    reason: "does not fit in usize".into(),
                }),
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize, ConfigError> {
        self.opt_usize(key)?
            .ok_or_else(|| ConfigError::MissingKey { key: self.key(key) })
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    fn opt_f64(&self, key: &str) -> Option<f64> {
        self.meta.get_f64(&self.key(key))
    }

    fn req_f64(&self, key: &str) -> Result<f64, ConfigError> {
        self.opt_f64(key)
            .ok_or_else(|| ConfigError::MissingKey { key: self.key(key) })
    }
}

impl ModelConfig {
    /// Build the description from GGUF metadata (architectures `deepseek2`, `qwen2`, `llama`,
    /// `qwen3moe`).
    pub fn from_gguf(meta: &dyn GgufKeyValues) -> Result<Self, ConfigError> {
        let arch_name =
            meta.get_str("general.architecture")
                .ok_or_else(|| ConfigError::MissingKey {
                    key: "general.architecture".into(),
                })?;
        if !Architecture::SUPPORTED_GGUF.contains(&arch_name) {
            return Err(ConfigError::UnsupportedArchitecture {
                name: arch_name.to_string(),
                supported: Architecture::SUPPORTED_GGUF,
            });
        }
        let kv = Kv {
            meta,
            arch: arch_name,
        };
        let cfg = if arch_name == "deepseek2" {
            deepseek2(&kv)?
        } else {
            gqa_model(&kv)?
        };
        validate(&cfg)?;
        Ok(cfg)
    }
}

/// Fields every architecture shares.
struct Common {
    vocab_size: usize,
    hidden_size: usize,
    block_count: usize,
    context_length: usize,
    rms_norm_eps: f64,
    num_heads: usize,
    ff_length: usize,
    bos: Option<u32>,
    eos: Vec<u32>,
}

fn common(kv: &Kv<'_>) -> Result<Common, ConfigError> {
    let vocab_size =
        match kv.opt_usize("vocab_size")? {
            Some(v) => v,
            None => kv.meta.array_len("tokenizer.ggml.tokens").ok_or_else(|| {
                ConfigError::MissingKey {
                    key: format!("{0}.vocab_size (or tokenizer.ggml.tokens)", kv.arch),
                }
            })?,
        };
    let token = |key: &str| kv.meta.get_u64(key).and_then(|v| u32::try_from(v).ok());
    Ok(Common {
        vocab_size,
        hidden_size: kv.req_usize("embedding_length")?,
        block_count: kv.req_usize("block_count")?,
        context_length: kv.req_usize("context_length")?,
        rms_norm_eps: kv.req_f64("attention.layer_norm_rms_epsilon")?,
        num_heads: kv.req_usize("attention.head_count")?,
        ff_length: kv.req_usize("feed_forward_length")?,
        bos: token("tokenizer.ggml.bos_token_id"),
        eos: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
    })
}

fn rope_scaling(
    kv: &Kv<'_>,
    context_length: usize,
    deepseek: bool,
) -> Result<RopeScaling, ConfigError> {
    let key = kv.key("rope.scaling.type");
    let Some(kind) = kv.meta.get_str(&key) else {
        return Ok(RopeScaling::None);
    };
    Ok(match kind {
        "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: kv.req_f64("rope.scaling.factor")?,
        },
        "yarn" => {
            // deepseek2 stores 0.1 * mscale_all_dim here (llama.cpp TAG_DEEPSEEK2_YARN_LOG_MUL_FIX).
            let m = kv
                .opt_f64("rope.scaling.yarn_log_multiplier")
                .filter(|_| deepseek)
                // The file holds an f32 of 0.1 × a short config decimal (1.0, 0.707); f32 keeps
                // about 7 significant digits, so rounding to 6 decimals recovers the decimal
                // instead of 1.0000000149.
                .map(|x| (x / 0.1 * 1e6).round() / 1e6);
            RopeScaling::Yarn {
                factor: kv.req_f64("rope.scaling.factor")?,
                original_max_position_embeddings: kv
                    .usize_or("rope.scaling.original_context_length", context_length)?,
                beta_fast: kv.opt_f64("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                beta_slow: kv.opt_f64("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
                mscale: m,
                mscale_all_dim: m,
                attention_factor: None,
            }
        }
        other => {
            return Err(ConfigError::UnsupportedRopeScaling {
                rope_type: other.to_string(),
            })
        }
    })
}

fn deepseek2(kv: &Kv<'_>) -> Result<ModelConfig, ConfigError> {
    let c = common(kv)?;
    let nextn = kv.usize_or("nextn_predict_layers", 0)?;
    let num_hidden_layers =
        c.block_count
            .checked_sub(nextn)
            .ok_or_else(|| ConfigError::InvalidValue {
                key: kv.key("nextn_predict_layers"),
                value: nextn.to_string(),
                reason: format!("exceeds block_count ({})", c.block_count),
            })?;
    let rope_dims = kv.req_usize("rope.dimension_count")?;
    let kv_lora_rank = kv.req_usize("attention.kv_lora_rank")?;
    let (key_name, key_length, value_length) = match kv.opt_usize("attention.key_length_mla")? {
        Some(k) => (
            kv.key("attention.key_length_mla"),
            k,
            kv.req_usize("attention.value_length_mla")?,
        ),
        None => (
            kv.key("attention.key_length"),
            kv.req_usize("attention.key_length")?,
            kv.req_usize("attention.value_length")?,
        ),
    };
    let qk_nope_head_dim =
        key_length
            .checked_sub(rope_dims)
            .ok_or_else(|| ConfigError::InvalidValue {
                key: key_name,
                value: key_length.to_string(),
                reason: format!("smaller than the rope dims ({rope_dims})"),
            })?;
    let mla = MlaConfig {
        num_heads: c.num_heads,
        q_lora_rank: kv.opt_usize("attention.q_lora_rank")?.filter(|&r| r > 0),
        kv_lora_rank,
        qk_nope_head_dim,
        qk_rope_head_dim: rope_dims,
        v_head_dim: value_length,
        attention_bias: false,
    };
    // llama.cpp reads an absent gating func as softmax, for V2 files that predate the key.
    let sigmoid = match kv.usize_or("expert_gating_func", 1)? {
        1 => false,
        2 => true,
        other => {
            return Err(ConfigError::InvalidValue {
                key: kv.key("expert_gating_func"),
                value: other.to_string(),
                reason: "expected 1 (softmax) or 2 (sigmoid)".into(),
            })
        }
    };
    let n_group = kv.usize_or("expert_group_count", 1)?.max(1);
    let topk_group = kv.usize_or("expert_group_used_count", n_group)?.max(1);
    let router = RouterConfig {
        scoring: if sigmoid {
            ScoringFunc::Sigmoid
        } else {
            ScoringFunc::Softmax
        },
        topk_method: match (sigmoid, n_group > 1) {
            (true, _) => TopkMethod::NoAuxTc,
            (false, true) => TopkMethod::GroupLimitedGreedy,
            (false, false) => TopkMethod::Greedy,
        },
        n_group,
        topk_group,
        norm_topk_prob: kv
            .meta
            .get_bool(&kv.key("expert_weights_norm"))
            .unwrap_or(false),
        routed_scaling_factor: kv.opt_f64("expert_weights_scale").unwrap_or(1.0) as f32,
        correction_bias: sigmoid,
    };
    let moe = MoeConfig {
        num_experts: kv.req_usize("expert_count")?,
        num_experts_per_tok: kv.req_usize("expert_used_count")?,
        expert_intermediate_size: kv.req_usize("expert_feed_forward_length")?,
        num_shared_experts: kv.usize_or("expert_shared_count", 0)?,
        first_k_dense_replace: kv.usize_or("leading_dense_block_count", 0)?,
        moe_layer_freq: 1,
        mlp_only_layers: Vec::new(),
        decoder_sparse_step: 1,
        router,
    };
    Ok(ModelConfig {
        architecture: if sigmoid {
            Architecture::DeepseekV3
        } else {
            Architecture::DeepseekV2
        },
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        num_hidden_layers,
        max_position_embeddings: c.context_length,
        rms_norm_eps: c.rms_norm_eps,
        tie_word_embeddings: false,
        attention: Attention::Mla(mla),
        rope: Rope {
            theta: kv.opt_f64("rope.freq_base").unwrap_or(10_000.0),
            scaling: rope_scaling(kv, c.context_length, true)?,
            interleaved: true,
            rotary_dim: rope_dims,
        },
        ffn: FeedForward {
            intermediate_size: c.ff_length,
            mlp_bias: false,
            moe: Some(moe),
        },
        bos_token_id: c.bos,
        eos_token_ids: c.eos,
        num_nextn_predict_layers: nextn,
        weight_quantization: None,
        torch_dtype: None,
    })
}

/// `qwen2`, `llama` (and Mixtral as `llama` with experts), `qwen3moe`.
fn gqa_model(kv: &Kv<'_>) -> Result<ModelConfig, ConfigError> {
    let c = common(kv)?;
    let head_dim = match kv.opt_usize("attention.key_length")? {
        Some(d) => d,
        None if c.num_heads > 0 && c.hidden_size % c.num_heads == 0 => c.hidden_size / c.num_heads,
        None => {
            return Err(ConfigError::MissingKey {
                key: kv.key("attention.key_length"),
            })
        }
    };
    let expert_count = kv.usize_or("expert_count", 0)?;
    let architecture = match (kv.arch, expert_count > 0) {
        ("qwen2", _) => Architecture::Qwen2,
        ("llama", false) => Architecture::Llama,
        ("llama", true) => Architecture::Mixtral,
        _ => Architecture::Qwen3Moe,
    };
    let moe = match architecture {
        Architecture::Mixtral | Architecture::Qwen3Moe => Some(MoeConfig {
            num_experts: kv.req_usize("expert_count")?,
            num_experts_per_tok: kv.req_usize("expert_used_count")?,
            expert_intermediate_size: match kv.opt_usize("expert_feed_forward_length")? {
                Some(n) => n,
                // Mixtral files size experts by feed_forward_length.
                None if architecture == Architecture::Mixtral => c.ff_length,
                None => {
                    return Err(ConfigError::MissingKey {
                        key: kv.key("expert_feed_forward_length"),
                    })
                }
            },
            num_shared_experts: 0,
            first_k_dense_replace: 0,
            moe_layer_freq: 1,
            mlp_only_layers: Vec::new(),
            decoder_sparse_step: 1,
            router: RouterConfig {
                scoring: ScoringFunc::Softmax,
                topk_method: TopkMethod::Greedy,
                n_group: 1,
                topk_group: 1,
                // llama.cpp renormalises both families' top-k weights.
                norm_topk_prob: kv
                    .meta
                    .get_bool(&kv.key("expert_weights_norm"))
                    .unwrap_or(true),
                routed_scaling_factor: 1.0,
                correction_bias: false,
            },
        }),
        _ => None,
    };
    let gqa = GqaConfig {
        num_heads: c.num_heads,
        num_kv_heads: kv.usize_or("attention.head_count_kv", c.num_heads)?,
        head_dim,
        qkv_bias: architecture == Architecture::Qwen2,
        o_bias: false,
        qk_norm: architecture == Architecture::Qwen3Moe,
        sliding_window: kv.opt_usize("attention.sliding_window")?.map(|size| {
            super::SlidingWindow {
                size,
                first_layer: 0,
            }
        }),
    };
    Ok(ModelConfig {
        architecture,
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        num_hidden_layers: c.block_count,
        max_position_embeddings: c.context_length,
        rms_norm_eps: c.rms_norm_eps,
        tie_word_embeddings: false,
        attention: Attention::Gqa(gqa),
        rope: Rope {
            theta: kv.opt_f64("rope.freq_base").unwrap_or(
                if architecture == Architecture::Mixtral {
                    1e6
                } else {
                    10_000.0
                },
            ),
            scaling: rope_scaling(kv, c.context_length, false)?,
            interleaved: false,
            rotary_dim: kv.usize_or("rope.dimension_count", head_dim)?,
        },
        ffn: FeedForward {
            intermediate_size: c.ff_length,
            mlp_bias: false,
            moe,
        },
        bos_token_id: c.bos,
        eos_token_ids: c.eos,
        num_nextn_predict_layers: 0,
        weight_quantization: None,
        torch_dtype: None,
    })
}
