//! Every weight tensor an architecture has, and what follows from the list: parameter counts
//! (total and active per token), weight memory for a dtype, and KV-cache bytes per token.
//!
//! Names are the Hugging Face hub checkpoint names (`model.layers.3.mlp.experts.17.down_proj.weight`,
//! Mixtral's `block_sparse_moe.experts.E.w1`), one tensor per routed expert as hub safetensors
//! store them. Shapes are PyTorch `[out, in]` for linear layers.
//!
//! Counting conventions (as the model cards count):
//! - `total` is every main-model parameter, the DeepSeek-V3 MTP layer excluded (DeepSeek's
//!   671B excludes the 14B MTP module, reported separately here).
//! - `active` counts routed experts at `num_experts_per_tok / num_experts` and everything else in
//!   full, the input embedding included (Qwen and Mistral cards). DeepSeek's cards leave the input
//!   embedding out: see [`ParamCounts::active_non_embedding`].
//!
//! KV cache (DeepSeek-V2 §2.1.3): MLA caches only the RMSNormed latent and the shared rope key,
//! `(kv_lora_rank + qk_rope_head_dim)` values per layer per token; GQA caches a key and a value
//! per KV head, `2 * num_kv_heads * head_dim`.

use frugal_formats::config::{Attention, GqaConfig, MlaConfig, ModelConfig};
use frugal_formats::DType;

/// What a weight tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TensorKind {
    /// The token embedding.
    Embedding,
    /// The output projection to logits.
    LmHead,
    /// An RMSNorm weight (layer norms, the final norm, MLA's latent norms, Qwen3's q/k norms).
    Norm,
    /// Attention projections and their biases.
    Attention,
    /// A dense MLP projection.
    DenseFfn,
    /// A shared-expert projection (DeepSeek), run for every token.
    SharedExpert,
    /// A routed-expert projection.
    RoutedExpert {
        /// Decoder layer.
        layer: usize,
        /// Expert index within the layer.
        expert: usize,
    },
    /// The router's weight (and V3's score-correction bias).
    Router,
    /// Tensors only the MTP module has (its embedding copy, `enorm`, `hnorm`, `eh_proj`,
    /// `shared_head`). The MTP layer's decoder block keeps its ordinary kinds, with
    /// [`PlannedTensor::mtp`] set.
    Mtp,
}

/// One weight tensor of the architecture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    /// The hub checkpoint name.
    pub name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<usize>,
    /// What it is for.
    pub kind: TensorKind,
    /// Whether it belongs to a multi-token-prediction layer (excluded from the main counts).
    pub mtp: bool,
}

impl PlannedTensor {
    /// Number of parameters.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Builds the plan while walking layers.
struct Planner {
    out: Vec<PlannedTensor>,
    mtp: bool,
}

impl Planner {
    fn push(&mut self, name: String, shape: &[usize], kind: TensorKind) {
        self.out.push(PlannedTensor {
            name,
            shape: shape.to_vec(),
            kind,
            mtp: self.mtp,
        });
    }

    /// A SwiGLU MLP `prefix.{gate,up,down}_proj.weight` of width `inter`.
    fn swiglu(&mut self, prefix: &str, hidden: usize, inter: usize, bias: bool, kind: TensorKind) {
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            let shape = if proj == "down_proj" {
                [hidden, inter]
            } else {
                [inter, hidden]
            };
            self.push(format!("{prefix}.{proj}.weight"), &shape, kind);
            if bias {
                self.push(format!("{prefix}.{proj}.bias"), &shape[..1], kind);
            }
        }
    }
}

/// Every weight tensor of the model, main layers first, then MTP layers.
pub fn tensor_plan(cfg: &ModelConfig) -> Vec<PlannedTensor> {
    let h = cfg.hidden_size;
    let mut p = Planner {
        out: Vec::new(),
        mtp: false,
    };
    p.push(
        "model.embed_tokens.weight".into(),
        &[cfg.vocab_size, h],
        TensorKind::Embedding,
    );
    for layer in 0..cfg.num_hidden_layers {
        decoder_layer(&mut p, cfg, layer);
    }
    p.push("model.norm.weight".into(), &[h], TensorKind::Norm);
    if !cfg.tie_word_embeddings {
        p.push(
            "lm_head.weight".into(),
            &[cfg.vocab_size, h],
            TensorKind::LmHead,
        );
    }
    p.mtp = true;
    for i in 0..cfg.num_nextn_predict_layers {
        let layer = cfg.num_hidden_layers + i;
        let pre = format!("model.layers.{layer}");
        // DeepSeek-V3 §2.2: RMSNorm(embed(t+1)) and RMSNorm(h) are concatenated and projected
        // by eh_proj; the checkpoint holds its own copies of the embedding and head.
        p.push(
            format!("{pre}.embed_tokens.weight"),
            &[cfg.vocab_size, h],
            TensorKind::Mtp,
        );
        p.push(format!("{pre}.enorm.weight"), &[h], TensorKind::Mtp);
        p.push(format!("{pre}.hnorm.weight"), &[h], TensorKind::Mtp);
        p.push(
            format!("{pre}.eh_proj.weight"),
            &[h, 2 * h],
            TensorKind::Mtp,
        );
        decoder_layer(&mut p, cfg, layer);
        p.push(
            format!("{pre}.shared_head.norm.weight"),
            &[h],
            TensorKind::Mtp,
        );
        p.push(
            format!("{pre}.shared_head.head.weight"),
            &[cfg.vocab_size, h],
            TensorKind::Mtp,
        );
    }
    p.out
}

fn decoder_layer(p: &mut Planner, cfg: &ModelConfig, layer: usize) {
    let h = cfg.hidden_size;
    let pre = format!("model.layers.{layer}");
    p.push(
        format!("{pre}.input_layernorm.weight"),
        &[h],
        TensorKind::Norm,
    );
    match &cfg.attention {
        Attention::Gqa(g) => gqa(p, &pre, h, g),
        Attention::Mla(m) => mla(p, &pre, h, m),
    }
    p.push(
        format!("{pre}.post_attention_layernorm.weight"),
        &[h],
        TensorKind::Norm,
    );

    let moe = cfg.ffn.moe.as_ref().filter(|m| m.is_moe_layer(layer));
    let Some(moe) = moe else {
        p.swiglu(
            &format!("{pre}.mlp"),
            h,
            cfg.ffn.intermediate_size,
            cfg.ffn.mlp_bias,
            TensorKind::DenseFfn,
        );
        return;
    };
    let e_inter = moe.expert_intermediate_size;
    let mixtral = cfg.architecture == frugal_formats::config::Architecture::Mixtral;
    let block = if mixtral {
        format!("{pre}.block_sparse_moe")
    } else {
        format!("{pre}.mlp")
    };
    p.push(
        format!("{block}.gate.weight"),
        &[moe.num_experts, h],
        TensorKind::Router,
    );
    if moe.router.correction_bias {
        p.push(
            format!("{block}.gate.e_score_correction_bias"),
            &[moe.num_experts],
            TensorKind::Router,
        );
    }
    for expert in 0..moe.num_experts {
        let kind = TensorKind::RoutedExpert { layer, expert };
        let e = format!("{block}.experts.{expert}");
        if mixtral {
            // Mixtral's w1 = gate, w2 = down, w3 = up.
            p.push(format!("{e}.w1.weight"), &[e_inter, h], kind);
            p.push(format!("{e}.w2.weight"), &[h, e_inter], kind);
            p.push(format!("{e}.w3.weight"), &[e_inter, h], kind);
        } else {
            p.swiglu(&e, h, e_inter, false, kind);
        }
    }
    if moe.num_shared_experts > 0 {
        p.swiglu(
            &format!("{pre}.mlp.shared_experts"),
            h,
            moe.shared_intermediate_size(),
            false,
            TensorKind::SharedExpert,
        );
    }
}

fn gqa(p: &mut Planner, pre: &str, h: usize, g: &GqaConfig) {
    let a = format!("{pre}.self_attn");
    let q = g.num_heads * g.head_dim;
    let kv = g.num_kv_heads * g.head_dim;
    for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
        p.push(
            format!("{a}.{proj}.weight"),
            &[rows, h],
            TensorKind::Attention,
        );
        if g.qkv_bias {
            p.push(format!("{a}.{proj}.bias"), &[rows], TensorKind::Attention);
        }
    }
    p.push(format!("{a}.o_proj.weight"), &[h, q], TensorKind::Attention);
    if g.o_bias {
        p.push(format!("{a}.o_proj.bias"), &[h], TensorKind::Attention);
    }
    if g.qk_norm {
        p.push(
            format!("{a}.q_norm.weight"),
            &[g.head_dim],
            TensorKind::Norm,
        );
        p.push(
            format!("{a}.k_norm.weight"),
            &[g.head_dim],
            TensorKind::Norm,
        );
    }
}

fn mla(p: &mut Planner, pre: &str, h: usize, m: &MlaConfig) {
    let a = format!("{pre}.self_attn");
    let q_out = m.num_heads * m.qk_head_dim();
    match m.q_lora_rank {
        Some(r) => {
            p.push(
                format!("{a}.q_a_proj.weight"),
                &[r, h],
                TensorKind::Attention,
            );
            if m.attention_bias {
                p.push(format!("{a}.q_a_proj.bias"), &[r], TensorKind::Attention);
            }
            p.push(format!("{a}.q_a_layernorm.weight"), &[r], TensorKind::Norm);
            p.push(
                format!("{a}.q_b_proj.weight"),
                &[q_out, r],
                TensorKind::Attention,
            );
        }
        None => p.push(
            format!("{a}.q_proj.weight"),
            &[q_out, h],
            TensorKind::Attention,
        ),
    }
    let latent = m.kv_lora_rank + m.qk_rope_head_dim;
    p.push(
        format!("{a}.kv_a_proj_with_mqa.weight"),
        &[latent, h],
        TensorKind::Attention,
    );
    if m.attention_bias {
        p.push(
            format!("{a}.kv_a_proj_with_mqa.bias"),
            &[latent],
            TensorKind::Attention,
        );
    }
    p.push(
        format!("{a}.kv_a_layernorm.weight"),
        &[m.kv_lora_rank],
        TensorKind::Norm,
    );
    let kv_b = m.num_heads * (m.qk_nope_head_dim + m.v_head_dim);
    p.push(
        format!("{a}.kv_b_proj.weight"),
        &[kv_b, m.kv_lora_rank],
        TensorKind::Attention,
    );
    p.push(
        format!("{a}.o_proj.weight"),
        &[h, m.num_heads * m.v_head_dim],
        TensorKind::Attention,
    );
    if m.attention_bias {
        p.push(format!("{a}.o_proj.bias"), &[h], TensorKind::Attention);
    }
}

/// Parameter counts of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ParamCounts {
    /// Every main-model parameter (MTP excluded).
    pub total: u64,
    /// Parameters used per token: routed experts at k/n, the rest in full (MTP excluded).
    pub active: u64,
    /// The input embedding (main model).
    pub embedding: u64,
    /// All routed-expert parameters (main model).
    pub routed_experts: u64,
    /// Every parameter of the MTP layers.
    pub mtp_total: u64,
    /// Parameters of the MTP layers used per draft token.
    pub mtp_active: u64,
}

impl ParamCounts {
    /// Active parameters without the input embedding, which is a table look-up, not compute
    /// (DeepSeek's cards count this way: V2-Lite 2.4B, V3 37B). With tied embeddings the matrix
    /// is also the LM head, so nothing is subtracted.
    pub fn active_non_embedding(&self, cfg: &ModelConfig) -> u64 {
        if cfg.tie_word_embeddings {
            self.active
        } else {
            self.active - self.embedding
        }
    }
}

/// Parameter counts from the tensor plan.
pub fn param_counts(cfg: &ModelConfig) -> ParamCounts {
    count_plan(cfg, &tensor_plan(cfg))
}

/// Parameter counts of an already built plan.
pub fn count_plan(cfg: &ModelConfig, plan: &[PlannedTensor]) -> ParamCounts {
    let (k, n) = cfg.ffn.moe.as_ref().map_or((1, 1), |m| {
        (m.num_experts_per_tok as u128, m.num_experts as u128)
    });
    let mut c = ParamCounts::default();
    let (mut routed_main, mut routed_mtp) = (0u64, 0u64);
    for t in plan {
        let numel = t.numel();
        let routed = matches!(t.kind, TensorKind::RoutedExpert { .. });
        match (t.mtp, routed) {
            (false, true) => routed_main += numel,
            (true, true) => routed_mtp += numel,
            (false, false) => c.active += numel,
            (true, false) => c.mtp_active += numel,
        }
        if t.mtp {
            c.mtp_total += numel;
        } else {
            c.total += numel;
        }
        if !t.mtp && t.kind == TensorKind::Embedding {
            c.embedding += numel;
        }
    }
    // Every expert of a layer has the same size, so k/n of the sum is exact up to rounding.
    let share = |routed: u64| (routed as u128 * k / n) as u64;
    c.routed_experts = routed_main;
    c.active += share(routed_main);
    c.mtp_active += share(routed_mtp);
    c
}

/// KV-cache bytes per token over the main decoder layers (MTP layers excluded), for a cache
/// element of `elem_bytes` bytes (2 for bf16/f16).
///
/// MLA: `layers * (kv_lora_rank + qk_rope_head_dim) * elem` (the latent, not per-head K/V).
/// GQA: `layers * 2 * num_kv_heads * head_dim * elem`.
pub fn kv_cache_bytes_per_token(cfg: &ModelConfig, elem_bytes: usize) -> u64 {
    let per_layer = match &cfg.attention {
        Attention::Mla(m) => m.kv_lora_rank + m.qk_rope_head_dim,
        Attention::Gqa(g) => 2 * g.num_kv_heads * g.head_dim,
    };
    cfg.num_hidden_layers as u64 * per_layer as u64 * elem_bytes as u64
}

/// Bytes the main-model weights take if every tensor is stored as `dtype`. A quantized type
/// is charged by whole blocks per row (the row length rounded up to the block size).
pub fn weight_bytes(plan: &[PlannedTensor], dtype: DType) -> u64 {
    plan.iter()
        .filter(|t| !t.mtp)
        .map(|t| {
            let row = t.shape.last().copied().unwrap_or(1) as u64;
            let rows = t.numel() / row.max(1);
            let blocks = row.div_ceil(dtype.block_size() as u64);
            rows * blocks * dtype.type_size() as u64
        })
        .sum()
}
