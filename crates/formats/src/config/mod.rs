//! The typed model description: one [`ModelConfig`] whether the model came as a Hugging Face
//! `config.json` ([`ModelConfig::from_hf_json`]) or as GGUF metadata ([`ModelConfig::from_gguf`]).
//!
//! Everything is checked and typed at load, so later code never looks up a string key:
//! attention is either grouped-query ([`GqaConfig`]) or DeepSeek's multi-head latent attention
//! ([`MlaConfig`]); the feed-forward is dense or mixture-of-experts ([`MoeConfig`]) with a typed
//! router ([`RouterConfig`]); rope scaling is an enum ([`RopeScaling`]).
//!
//! Families and their facts (from the transformers 5 modeling and configuration files and the
//! DeepSeek fact sheet in the shared reference data):
//! - Qwen2: q/k/v projections carry a bias; o_proj does not.
//! - Llama: `attention_bias` puts a bias on q/k/v/o; `mlp_bias` on the MLP.
//! - Qwen3-MoE: RMSNorm on each query and key head (`q_norm`, `k_norm`), an explicit `head_dim`,
//!   softmax top-k routing renormalised when `norm_topk_prob`.
//! - Mixtral: softmax over the top-k router logits, which equals softmax top-k renormalised.
//! - DeepSeek-V2: MLA; softmax routing, `greedy` or `group_limited_greedy`, scaled by
//!   `routed_scaling_factor`, not renormalised in released configs.
//! - DeepSeek-V3 / R1 / Kimi-K2: MLA; sigmoid scores, `noaux_tc` group-limited choice steered by
//!   a per-expert `e_score_correction_bias`, renormalised, then scaled; one MTP layer.
//! - DeepSeek-V3.2 (`deepseek_v32`) and V4 (`deepseek_v4`) change attention and are rejected.
//!
//! Which keys are required: every key that sets a tensor shape (hidden size, layer count,
//! heads, vocabulary, FFN widths, expert counts, MLA ranks and head dims). A library default
//! there would silently describe a different model. Keys that only tune behaviour (norm eps,
//! rope theta, routing knobs, bias flags) take the transformers defaults of that family.

mod gguf;
mod hf;

pub use gguf::GgufKeyValues;

use std::fmt;

/// Why a model description could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("config.json is not valid JSON: {source}")]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A required key is absent (or null).
    #[error("config is missing required key `{key}`")]
    MissingKey {
        /// The key, dotted for nested keys (`rope_scaling.factor`).
        key: String,
    },
    /// A key holds a value of the wrong JSON or GGUF type.
    #[error("config key `{key}` should be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What the key should hold ("a non-negative integer", "a string", ...).
        expected: &'static str,
        /// What it holds.
        found: String,
    },
    /// A key holds a value of the right type that makes no sense.
    #[error("config key `{key}` has invalid value {value}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The architecture is not one this crate describes.
    #[error(
        "unsupported architecture `{name}`; supported: {}",
        supported.join(", ")
    )]
    UnsupportedArchitecture {
        /// The `architectures[0]` / `model_type` / `general.architecture` value.
        name: String,
        /// The names that are supported.
        supported: &'static [&'static str],
    },
    /// The rope scaling type is not implemented.
    #[error(
        "unsupported rope scaling type `{rope_type}` (supported: default, linear, llama3, yarn)"
    )]
    UnsupportedRopeScaling {
        /// The `rope_type` / `type` value.
        rope_type: String,
    },
}

/// The model families this crate describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Architecture {
    /// DeepSeek-V2 and V2-Lite (`DeepseekV2ForCausalLM`, GGUF `deepseek2` with softmax gating).
    DeepseekV2,
    /// DeepSeek-V3, R1 and Kimi-K2 (`DeepseekV3ForCausalLM`, GGUF `deepseek2` with sigmoid gating).
    DeepseekV3,
    /// Qwen2 and the R1-Distill-Qwen models.
    Qwen2,
    /// Llama and the R1-Distill-Llama models.
    Llama,
    /// Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B).
    Qwen3Moe,
    /// Mixtral (8x7B, 8x22B).
    Mixtral,
}

impl Architecture {
    /// The Hugging Face `architectures[0]` names accepted, in a fixed order; used in errors.
    pub const SUPPORTED_HF: &'static [&'static str] = &[
        "DeepseekV2ForCausalLM",
        "DeepseekV3ForCausalLM",
        "Qwen2ForCausalLM",
        "LlamaForCausalLM",
        "Qwen3MoeForCausalLM",
        "MixtralForCausalLM",
    ];

    /// The GGUF `general.architecture` values accepted; used in errors.
    pub const SUPPORTED_GGUF: &'static [&'static str] =
        &["deepseek2", "qwen2", "llama", "qwen3moe"];

    /// The Hugging Face class name of this family.
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::DeepseekV2 => "DeepseekV2ForCausalLM",
            Architecture::DeepseekV3 => "DeepseekV3ForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Qwen3Moe => "Qwen3MoeForCausalLM",
            Architecture::Mixtral => "MixtralForCausalLM",
        }
    }

    /// Whether this family uses DeepSeek's multi-head latent attention.
    pub fn is_deepseek(self) -> bool {
        matches!(self, Architecture::DeepseekV2 | Architecture::DeepseekV3)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hf_name())
    }
}

/// A decoder-only transformer, as far as shapes and behaviour go.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ModelConfig {
    /// The family.
    pub architecture: Architecture,
    /// Rows of the embedding and of the LM head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Decoder layers, not counting MTP layers.
    pub num_hidden_layers: usize,
    /// Longest context the model was configured for.
    pub max_position_embeddings: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Whether the LM head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// The attention block.
    pub attention: Attention,
    /// Rotary position embedding.
    pub rope: Rope,
    /// The feed-forward block.
    pub ffn: FeedForward,
    /// Beginning-of-sequence token, when the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (a config may list several).
    pub eos_token_ids: Vec<u32>,
    /// DeepSeek-V3 multi-token-prediction layers stored after the decoder layers (0 if none).
    pub num_nextn_predict_layers: usize,
    /// How the checkpoint's weights are quantized, when `quantization_config` says so.
    pub weight_quantization: Option<WeightQuantization>,
    /// The `torch_dtype` (or transformers 5 `dtype`) string, such as `bfloat16`.
    pub torch_dtype: Option<String>,
}

/// The attention block of every layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Attention {
    /// Grouped-query attention (multi-head when `num_kv_heads == num_heads`).
    Gqa(GqaConfig),
    /// DeepSeek's multi-head latent attention.
    Mla(MlaConfig),
}

impl Attention {
    /// Number of query heads.
    pub fn num_heads(&self) -> usize {
        match self {
            Attention::Gqa(g) => g.num_heads,
            Attention::Mla(m) => m.num_heads,
        }
    }
}

/// Grouped-query attention: `num_heads` query heads share `num_kv_heads` key/value heads.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct GqaConfig {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; divides `num_heads`.
    pub num_kv_heads: usize,
    /// Width of one head (not always `hidden_size / num_heads`: Qwen3 sets it explicitly).
    pub head_dim: usize,
    /// Whether q/k/v projections have a bias (Qwen2 always; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Whether the output projection has a bias.
    pub o_bias: bool,
    /// Whether each query and key head is RMSNormed before rope (Qwen3).
    pub qk_norm: bool,
    /// Sliding-window attention, when enabled.
    pub sliding_window: Option<SlidingWindow>,
}

/// Sliding-window attention: a layer attends only to the last `size` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Window length in tokens.
    pub size: usize,
    /// First layer that uses the window (Qwen2's `max_window_layers`; 0 for Mistral-style).
    pub first_layer: usize,
}

/// Multi-head latent attention (DeepSeek-V2 §2.1): keys and values are rebuilt per head from a
/// shared `kv_lora_rank` latent; one `qk_rope_head_dim` rope key is shared by all heads.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MlaConfig {
    /// Query heads (= key/value heads after decompression).
    pub num_heads: usize,
    /// Rank of the query compression (`q_a_proj`), or `None` for a plain `q_proj` (V2-Lite).
    pub q_lora_rank: Option<usize>,
    /// Rank of the compressed KV latent, the part that is cached.
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without rope.
    pub qk_nope_head_dim: usize,
    /// Per-head query dims with rope; also the width of the shared rope key.
    pub qk_rope_head_dim: usize,
    /// Per-head value dims.
    pub v_head_dim: usize,
    /// `attention_bias`: bias on q_a_proj (or q_proj), kv_a_proj_with_mqa and o_proj.
    pub attention_bias: bool,
}

impl MlaConfig {
    /// Query/key head width: `qk_nope_head_dim + qk_rope_head_dim` (192 for V2/V3).
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }
}

/// Rotary position embedding.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Rope {
    /// Base of the inverse frequencies (`rope_theta`).
    pub theta: f64,
    /// Context-extension scaling of the frequencies.
    pub scaling: RopeScaling,
    /// Whether rotated pairs are adjacent, (x0,x1), (x2,x3), ... (DeepSeek MLA), rather than
    /// the two halves of the head, (x0, x_{d/2}), ... (Llama/Qwen "rotate_half").
    pub interleaved: bool,
    /// How many leading dims of each head are rotated: `qk_rope_head_dim` for MLA,
    /// `head_dim * partial_rotary_factor` for GQA.
    pub rotary_dim: usize,
}

/// Context-extension scaling of the rope frequencies (transformers' `rope_type`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// Plain rope (`default`).
    None,
    /// Positions divided by `factor` (`linear`).
    Linear {
        /// Divisor of positions.
        factor: f64,
    },
    /// Llama 3.1 wavelength-dependent scaling (`llama3`). In GGUF the resulting per-frequency
    /// factors are stored as the tensor `rope_freqs.weight` instead of these keys.
    Llama3 {
        /// Scale of low frequencies.
        factor: f64,
        /// Wavelength bound (as a fraction of the original context) of low frequencies.
        low_freq_factor: f64,
        /// Wavelength bound of high frequencies, which are kept.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: usize,
    },
    /// YaRN (`yarn`), as DeepSeek V2/V3 use it.
    Yarn {
        /// Context extension factor.
        factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: usize,
        /// Rotations above which dims are extrapolated (default 32).
        beta_fast: f64,
        /// Rotations below which dims are interpolated (default 1).
        beta_slow: f64,
        /// DeepSeek `mscale`: cos/sin tables are scaled by
        /// `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)`.
        mscale: Option<f64>,
        /// DeepSeek `mscale_all_dim`: the softmax scale is multiplied by
        /// `get_mscale(factor, mscale_all_dim)^2`.
        mscale_all_dim: Option<f64>,
        /// An explicit cos/sin scale (`attention_factor`), overriding the mscale rule.
        attention_factor: Option<f64>,
    },
}

/// YaRN's `get_mscale(s, m) = 0.1 * m * ln(s) + 1` for `s > 1`, else 1.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// The feed-forward block: a SwiGLU MLP `down(silu(gate(x)) * up(x))`, dense or experts.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FeedForward {
    /// Width of the dense MLP (all layers of a dense model; DeepSeek's leading dense layers).
    pub intermediate_size: usize,
    /// Whether the MLP projections have a bias (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// The mixture of experts, for MoE models.
    pub moe: Option<MoeConfig>,
}

/// A mixture-of-experts feed-forward and which layers use it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MoeConfig {
    /// Routed experts per MoE layer.
    pub num_experts: usize,
    /// Experts chosen per token.
    pub num_experts_per_tok: usize,
    /// Width of one routed expert's MLP.
    pub expert_intermediate_size: usize,
    /// Shared experts (DeepSeek), run for every token as ONE MLP of width
    /// `expert_intermediate_size * num_shared_experts`.
    pub num_shared_experts: usize,
    /// DeepSeek: the first this many layers are dense.
    pub first_k_dense_replace: usize,
    /// DeepSeek: among the rest, layers whose index is a multiple of this are MoE.
    pub moe_layer_freq: usize,
    /// Qwen3-MoE: layers forced dense.
    pub mlp_only_layers: Vec<usize>,
    /// Qwen3-MoE: layer `l` is MoE when `(l + 1) % decoder_sparse_step == 0`.
    pub decoder_sparse_step: usize,
    /// How experts are chosen and weighted.
    pub router: RouterConfig,
}

impl MoeConfig {
    /// Whether decoder layer `layer` uses the mixture of experts (otherwise the dense MLP).
    ///
    /// DeepSeek: `layer >= first_k_dense_replace && layer % moe_layer_freq == 0`; Qwen3-MoE:
    /// `layer ∉ mlp_only_layers && (layer + 1) % decoder_sparse_step == 0`. Every family sets
    /// the other family's knobs to neutral values, so one rule covers all.
    // `%` rather than `is_multiple_of`, which is newer than the workspace's rust-version.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        layer >= self.first_k_dense_replace
            && layer % self.moe_layer_freq.max(1) == 0
            && (layer + 1) % self.decoder_sparse_step.max(1) == 0
            && !self.mlp_only_layers.contains(&layer)
    }

    /// Width of the shared-expert MLP (0 when there is none).
    pub fn shared_intermediate_size(&self) -> usize {
        self.expert_intermediate_size * self.num_shared_experts
    }
}

/// How a router turns logits into chosen experts and their weights.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Logits to scores.
    pub scoring: ScoringFunc,
    /// How the top-k experts are chosen.
    pub topk_method: TopkMethod,
    /// Expert groups for group-limited choice (1 = no grouping).
    pub n_group: usize,
    /// Groups kept for group-limited choice.
    pub topk_group: usize,
    /// Whether the chosen weights are divided by their sum.
    pub norm_topk_prob: bool,
    /// Final multiplier of the weights.
    pub routed_scaling_factor: f32,
    /// Whether a per-expert bias (`e_score_correction_bias`) steers the choice (V3 `noaux_tc`).
    pub correction_bias: bool,
}

/// Router score function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoringFunc {
    /// Softmax over all experts.
    Softmax,
    /// Independent sigmoid per expert.
    Sigmoid,
}

/// Top-k choice of experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopkMethod {
    /// Plain top-k of the scores.
    Greedy,
    /// DeepSeek-V2: keep the `topk_group` groups with the highest max score, top-k inside them.
    GroupLimitedGreedy,
    /// DeepSeek-V3: biased scores; groups ranked by the sum of their top-2; top-k inside.
    NoAuxTc,
}

/// How checkpoint weights are quantized (`quantization_config`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WeightQuantization {
    /// Block-scaled FP8 (DeepSeek-V3/R1): a weight is `fp8 value * weight_scale_inv` of its block.
    Fp8 {
        /// The FP8 element format.
        format: Fp8Format,
        /// `[rows, cols]` of one scale block (`[128, 128]`), or `None` for per-tensor scales.
        block_size: Option<[usize; 2]>,
    },
    /// Another method (gptq, awq, bitsandbytes, ...), named for display; loading is refused later.
    Other {
        /// The `quant_method` value.
        method: String,
    },
}

/// FP8 element formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8Format {
    /// 4 exponent, 3 mantissa bits.
    E4M3,
    /// 5 exponent, 2 mantissa bits.
    E5M2,
}

/// Checks shared by both loaders: the numbers fit together.
fn validate(cfg: &ModelConfig) -> Result<(), ConfigError> {
    let positive = |key: &str, v: usize| -> Result<(), ConfigError> {
        if v == 0 {
            return Err(ConfigError::InvalidValue {
                key: key.to_string(),
                value: "0".into(),
                reason: "must be positive".into(),
            });
        }
        Ok(())
    };
    positive("vocab_size", cfg.vocab_size)?;
    positive("hidden_size", cfg.hidden_size)?;
    positive("num_hidden_layers", cfg.num_hidden_layers)?;
    positive("num_attention_heads", cfg.attention.num_heads())?;
    match &cfg.attention {
        Attention::Gqa(g) => {
            positive("num_key_value_heads", g.num_kv_heads)?;
            positive("head_dim", g.head_dim)?;
            if g.num_heads % g.num_kv_heads != 0 {
                return Err(ConfigError::InvalidValue {
                    key: "num_key_value_heads".into(),
                    value: g.num_kv_heads.to_string(),
                    reason: format!("must divide num_attention_heads ({})", g.num_heads),
                });
            }
            if cfg.rope.rotary_dim > g.head_dim || cfg.rope.rotary_dim & 1 == 1 {
                return Err(ConfigError::InvalidValue {
                    key: "partial_rotary_factor".into(),
                    value: cfg.rope.rotary_dim.to_string(),
                    reason: format!(
                        "rotary dims must be even and at most head_dim ({})",
                        g.head_dim
                    ),
                });
            }
        }
        Attention::Mla(m) => {
            positive("kv_lora_rank", m.kv_lora_rank)?;
            positive("qk_rope_head_dim", m.qk_rope_head_dim)?;
            positive("v_head_dim", m.v_head_dim)?;
        }
    }
    if let Some(moe) = &cfg.ffn.moe {
        positive("num_experts", moe.num_experts)?;
        positive("moe_intermediate_size", moe.expert_intermediate_size)?;
        if moe.num_experts_per_tok == 0 || moe.num_experts_per_tok > moe.num_experts {
            return Err(ConfigError::InvalidValue {
                key: "num_experts_per_tok".into(),
                value: moe.num_experts_per_tok.to_string(),
                reason: format!(
                    "must be between 1 and the number of experts ({})",
                    moe.num_experts
                ),
            });
        }
        let r = &moe.router;
        if r.n_group == 0 || moe.num_experts % r.n_group != 0 || r.topk_group > r.n_group {
            return Err(ConfigError::InvalidValue {
                key: "n_group".into(),
                value: format!("{} (topk_group {})", r.n_group, r.topk_group),
                reason: format!(
                    "groups must divide the {} experts and topk_group must not exceed them",
                    moe.num_experts
                ),
            });
        }
    } else {
        positive("intermediate_size", cfg.ffn.intermediate_size)?;
    }
    Ok(())
}
