//! `frugal inspect`: describe a model without loading its weights.
//!
//! Three steps, so other readers plug in at the first one only:
//! 1. [`load`] opens the model ([`frugal_formats::ModelFiles`]) and gathers an [`InspectInput`]:
//!    the typed config, plus whatever else the source knows (tensor types and sizes on disk,
//!    tokenizer, chat template). A folder with only `config.json` is enough.
//! 2. [`report`] computes everything from an [`InspectInput`] into a serialisable [`Report`].
//! 3. [`render_text`] or `serde_json` prints it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;
use frugal_formats::config::{
    Attention, ModelConfig, RopeScaling, ScoringFunc, TopkMethod, WeightQuantization,
};
use frugal_formats::{DType, ModelFiles, TensorInfo};
use frugal_model::params::{count_plan, kv_cache_bytes_per_token, tensor_plan, weight_bytes};
use serde::Serialize;

/// What a model source tells about the model.
#[derive(Clone, Debug)]
pub struct InspectInput {
    /// Where it came from, for display.
    pub source: String,
    /// The typed configuration.
    pub config: ModelConfig,
    /// Tensor names, types and bytes on disk, when the source lists them.
    pub tensors: Option<Vec<TensorInfo>>,
    /// A description of the tokenizer found (`tokenizer.json`, GGUF `gpt2` vocabulary, ...).
    pub tokenizer: Option<String>,
    /// A description of the chat template found.
    pub chat_template: Option<String>,
}

/// Open what `spec` names (a folder, a `.gguf` file, or `ORG/NAME` in the hub cache) and gather
/// what it tells: the typed config, tensor types and sizes, tokenizer and chat template.
pub fn load(spec: &str) -> anyhow::Result<InspectInput> {
    let files = crate::load::open_model(spec)?;
    let config = files.config()?;
    let tensors = files.tensors().map(|t| t.tensor_infos());
    Ok(InspectInput {
        source: files.path().display().to_string(),
        config,
        tensors,
        tokenizer: describe_tokenizer(&files),
        chat_template: describe_chat_template(&files),
    })
}

/// Where the tokenizer comes from and its size, or why it failed to load.
fn describe_tokenizer(files: &ModelFiles) -> Option<String> {
    let origin = match files.gguf_metadata() {
        Some(md) => format!(
            "GGUF {} vocabulary (pre-tokenizer {})",
            md.get_str("tokenizer.ggml.model")?,
            md.get_str("tokenizer.ggml.pre").unwrap_or("default")
        ),
        None => "tokenizer.json".to_string(),
    };
    match frugal_engine::assets::load_tokenizer(files) {
        Ok(Some(t)) => Some(format!("{origin}, {} tokens", t.vocab_size())),
        Ok(None) => None,
        Err(e) => Some(format!("{origin}: failed to load: {e}")),
    }
}

/// Where the chat template comes from, its size, and whether it compiles.
fn describe_chat_template(files: &ModelFiles) -> Option<String> {
    let source = files.chat_template()?;
    let origin = match (files.hf_folder(), files.gguf_metadata()) {
        (Some(f), _) if f.chat_template_file().is_some() => "chat_template.jinja",
        (Some(_), _) => "tokenizer_config.json",
        _ => "GGUF tokenizer.chat_template",
    };
    let tokenizer = frugal_engine::assets::load_tokenizer(files).ok().flatten();
    match frugal_engine::assets::load_chat_template(files, tokenizer.as_ref()) {
        Ok(_) => Some(format!("{origin} ({} bytes)", source.len())),
        Err(e) => Some(format!(
            "{origin} ({} bytes): does not compile: {e}",
            source.len()
        )),
    }
}

/// Everything `inspect` prints; `--json` prints this object.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where the model came from.
    pub source: String,
    /// The Hugging Face class name of the family.
    pub architecture: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Configured context length.
    pub max_position_embeddings: usize,
    /// Decoder layers (MTP excluded).
    pub layers: usize,
    /// Layers with a dense MLP.
    pub dense_layers: usize,
    /// Layers with a mixture of experts.
    pub moe_layers: usize,
    /// Multi-token-prediction layers stored after the decoder layers.
    pub mtp_layers: usize,
    /// The attention block.
    pub attention: AttentionReport,
    /// Rope: theta and scaling in words.
    pub rope: String,
    /// The experts, for MoE models.
    pub experts: Option<ExpertsReport>,
    /// Main-model parameters (MTP excluded).
    pub params_total: u64,
    /// Parameters used per token, input embedding included.
    pub params_active: u64,
    /// Parameters used per token without the input embedding (DeepSeek's convention).
    pub params_active_non_embedding: u64,
    /// Parameters of the MTP layers.
    pub params_mtp: u64,
    /// Weight quantization declared by the config.
    pub weight_quantization: Option<String>,
    /// The config's `torch_dtype`.
    pub torch_dtype: Option<String>,
    /// Main-model weight bytes if stored in each of a few types.
    pub weight_bytes_estimate: BTreeMap<String, u64>,
    /// Tensor count and bytes per type, when the tensors are known.
    pub tensors_by_dtype: Option<Vec<DtypeReport>>,
    /// Bytes of all known tensors on disk.
    pub weight_bytes_on_disk: Option<u64>,
    /// KV-cache bytes per token with 16-bit cache elements.
    pub kv_cache_bytes_per_token: u64,
    /// KV-cache bytes per 1,000 tokens with 16-bit cache elements.
    pub kv_cache_bytes_per_1k_tokens: u64,
    /// What is cached per layer and token.
    pub kv_cache_layout: String,
    /// The tokenizer found.
    pub tokenizer: Option<String>,
    /// The chat template found.
    pub chat_template: Option<String>,
}

/// The attention block.
#[derive(Clone, Debug, Serialize)]
pub struct AttentionReport {
    /// `gqa` or `mla`.
    pub kind: &'static str,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA).
    pub kv_heads: Option<usize>,
    /// Head width (GQA).
    pub head_dim: Option<usize>,
    /// MLA query rank (`None` for a plain q_proj).
    pub q_lora_rank: Option<usize>,
    /// MLA latent rank.
    pub kv_lora_rank: Option<usize>,
    /// MLA per-head dims: nope, rope, value.
    pub qk_nope_head_dim: Option<usize>,
    /// MLA rope dims.
    pub qk_rope_head_dim: Option<usize>,
    /// MLA value dims.
    pub v_head_dim: Option<usize>,
    /// A one-line summary.
    pub summary: String,
}

/// The mixture of experts.
#[derive(Clone, Debug, Serialize)]
pub struct ExpertsReport {
    /// Routed experts per MoE layer.
    pub routed: usize,
    /// Routed experts chosen per token.
    pub active: usize,
    /// Shared experts.
    pub shared: usize,
    /// Width of one expert.
    pub expert_intermediate_size: usize,
    /// The router in words.
    pub router: String,
}

/// Tensors of one type.
#[derive(Clone, Debug, Serialize)]
pub struct DtypeReport {
    /// The type name.
    pub dtype: String,
    /// How many tensors.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Compute the report.
pub fn report(input: &InspectInput) -> Report {
    let cfg = &input.config;
    let plan = tensor_plan(cfg);
    let counts = count_plan(cfg, &plan);
    let moe_layers = match &cfg.ffn.moe {
        Some(m) => (0..cfg.num_hidden_layers)
            .filter(|&l| m.is_moe_layer(l))
            .count(),
        None => 0,
    };
    let kv = kv_cache_bytes_per_token(cfg, 2);
    let (attention, kv_layout) = attention_report(cfg);
    let tensors_by_dtype = input.tensors.as_ref().map(|ts| {
        let mut by: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        for t in ts {
            let e = by.entry(t.dtype.name().to_string()).or_default();
            e.0 += 1;
            e.1 += t.nbytes as u64;
        }
        by.into_iter()
            .map(|(dtype, (count, bytes))| DtypeReport {
                dtype,
                count,
                bytes,
            })
            .collect()
    });
    Report {
        source: input.source.clone(),
        architecture: cfg.architecture.hf_name().to_string(),
        hidden_size: cfg.hidden_size,
        vocab_size: cfg.vocab_size,
        max_position_embeddings: cfg.max_position_embeddings,
        layers: cfg.num_hidden_layers,
        dense_layers: cfg.num_hidden_layers - moe_layers,
        moe_layers,
        mtp_layers: cfg.num_nextn_predict_layers,
        attention,
        rope: rope_summary(cfg),
        experts: cfg.ffn.moe.as_ref().map(|m| ExpertsReport {
            routed: m.num_experts,
            active: m.num_experts_per_tok,
            shared: m.num_shared_experts,
            expert_intermediate_size: m.expert_intermediate_size,
            router: router_summary(m),
        }),
        params_total: counts.total,
        params_active: counts.active,
        params_active_non_embedding: counts.active_non_embedding(cfg),
        params_mtp: counts.mtp_total,
        weight_quantization: cfg.weight_quantization.as_ref().map(|q| match q {
            WeightQuantization::Fp8 { format, block_size } => match block_size {
                Some([r, c]) => format!("fp8 {format:?}, {r}x{c} block scales"),
                None => format!("fp8 {format:?}"),
            },
            WeightQuantization::Other { method } => method.clone(),
            _ => "unknown".into(),
        }),
        torch_dtype: cfg.torch_dtype.clone(),
        weight_bytes_estimate: [DType::BF16, DType::Q8_0, DType::Q4K]
            .into_iter()
            .map(|d| (d.name().to_string(), weight_bytes(&plan, d)))
            .collect(),
        weight_bytes_on_disk: input
            .tensors
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.nbytes as u64).sum()),
        tensors_by_dtype,
        kv_cache_bytes_per_token: kv,
        kv_cache_bytes_per_1k_tokens: kv * 1000,
        kv_cache_layout: kv_layout,
        tokenizer: input.tokenizer.clone(),
        chat_template: input.chat_template.clone(),
    }
}

fn attention_report(cfg: &ModelConfig) -> (AttentionReport, String) {
    match &cfg.attention {
        Attention::Gqa(g) => {
            let mut extras = Vec::new();
            if g.qkv_bias {
                extras.push("qkv bias".to_string());
            }
            if g.qk_norm {
                extras.push("q/k RMSNorm".to_string());
            }
            if let Some(w) = g.sliding_window {
                extras.push(format!(
                    "sliding window {} from layer {}",
                    w.size, w.first_layer
                ));
            }
            let extras = if extras.is_empty() {
                String::new()
            } else {
                format!(", {}", extras.join(", "))
            };
            let summary = format!(
                "GQA: {} query heads, {} KV heads, head dim {}{extras}",
                g.num_heads, g.num_kv_heads, g.head_dim
            );
            let layout = format!(
                "K and V: 2 x {} KV heads x {} dims per layer",
                g.num_kv_heads, g.head_dim
            );
            let r = AttentionReport {
                kind: "gqa",
                heads: g.num_heads,
                kv_heads: Some(g.num_kv_heads),
                head_dim: Some(g.head_dim),
                q_lora_rank: None,
                kv_lora_rank: None,
                qk_nope_head_dim: None,
                qk_rope_head_dim: None,
                v_head_dim: None,
                summary,
            };
            (r, layout)
        }
        Attention::Mla(m) => {
            let q = match m.q_lora_rank {
                Some(r) => format!("q_lora_rank {r}"),
                None => "no q compression".to_string(),
            };
            let summary = format!(
                "MLA: {} heads, {q}, kv_lora_rank {}, qk_nope {} + qk_rope {}, v {}",
                m.num_heads, m.kv_lora_rank, m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
            );
            let layout = format!(
                "MLA latent: kv_lora_rank {} + shared rope key {} per layer (not per-head K/V)",
                m.kv_lora_rank, m.qk_rope_head_dim
            );
            let r = AttentionReport {
                kind: "mla",
                heads: m.num_heads,
                kv_heads: None,
                head_dim: None,
                q_lora_rank: m.q_lora_rank,
                kv_lora_rank: Some(m.kv_lora_rank),
                qk_nope_head_dim: Some(m.qk_nope_head_dim),
                qk_rope_head_dim: Some(m.qk_rope_head_dim),
                v_head_dim: Some(m.v_head_dim),
                summary,
            };
            (r, layout)
        }
    }
}

fn rope_summary(cfg: &ModelConfig) -> String {
    let r = &cfg.rope;
    let scaling = match &r.scaling {
        RopeScaling::None => "no scaling".to_string(),
        RopeScaling::Linear { factor } => format!("linear x{factor}"),
        RopeScaling::Llama3 {
            factor,
            original_max_position_embeddings,
            ..
        } => {
            format!("llama3 x{factor} from {original_max_position_embeddings}")
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            mscale,
            mscale_all_dim,
            ..
        } => {
            let mut s = format!("yarn x{factor} from {original_max_position_embeddings}");
            if let (Some(m), Some(a)) = (mscale, mscale_all_dim) {
                let _ = write!(s, ", mscale {m} / {a}");
            }
            s
        }
        _ => "other scaling".to_string(),
    };
    let pairs = if r.interleaved {
        "interleaved pairs"
    } else {
        "half-split pairs"
    };
    format!(
        "theta {}, {scaling}, {} rotary dims, {pairs}",
        r.theta, r.rotary_dim
    )
}

fn router_summary(m: &frugal_formats::config::MoeConfig) -> String {
    let r = &m.router;
    let scoring = match r.scoring {
        ScoringFunc::Softmax => "softmax",
        ScoringFunc::Sigmoid => "sigmoid",
    };
    let method = match r.topk_method {
        TopkMethod::Greedy => "top-k".to_string(),
        TopkMethod::GroupLimitedGreedy => format!(
            "group-limited top-k ({} of {} groups)",
            r.topk_group, r.n_group
        ),
        TopkMethod::NoAuxTc => format!("noaux_tc ({} of {} groups)", r.topk_group, r.n_group),
    };
    let mut s = format!("{scoring}, {method}");
    if r.correction_bias {
        s.push_str(", score-correction bias");
    }
    if r.norm_topk_prob {
        s.push_str(", renormalised");
    }
    if r.routed_scaling_factor != 1.0 {
        let _ = write!(s, ", scale {}", r.routed_scaling_factor);
    }
    s
}

fn params(n: u64) -> String {
    if n >= 1_000_000_000_000 {
        format!("{:.2}T", n as f64 / 1e12)
    } else if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{:.1}M", n as f64 / 1e6)
    }
}

fn bytes(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if n as f64 >= GIB {
        format!("{:.1} GiB", n as f64 / GIB)
    } else if n as f64 >= MIB {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

/// The report as text for a terminal.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<22}{v}");
    };
    line("model", r.source.clone());
    line("architecture", r.architecture.clone());
    line(
        "layers",
        format!(
            "{} ({} dense, {} MoE){}",
            r.layers,
            r.dense_layers,
            r.moe_layers,
            if r.mtp_layers > 0 {
                format!(" + {} MTP", r.mtp_layers)
            } else {
                String::new()
            }
        ),
    );
    line(
        "hidden / vocab",
        format!("{} / {}", r.hidden_size, r.vocab_size),
    );
    line("context", r.max_position_embeddings.to_string());
    line("attention", r.attention.summary.clone());
    line("rope", r.rope.clone());
    if let Some(e) = &r.experts {
        line(
            "experts",
            format!(
                "{} routed, {} active, {} shared, width {}",
                e.routed, e.active, e.shared, e.expert_intermediate_size
            ),
        );
        line("router", e.router.clone());
    }
    line(
        "parameters",
        format!(
            "{} total, {} active ({} without the embedding)",
            params(r.params_total),
            params(r.params_active),
            params(r.params_active_non_embedding)
        ),
    );
    if r.params_mtp > 0 {
        line(
            "MTP parameters",
            format!("{} (not in the total)", params(r.params_mtp)),
        );
    }
    if let Some(q) = &r.weight_quantization {
        line("checkpoint weights", q.clone());
    } else if let Some(d) = &r.torch_dtype {
        line("checkpoint dtype", d.clone());
    }
    let est: Vec<String> = r
        .weight_bytes_estimate
        .iter()
        .map(|(d, b)| format!("{d} {}", bytes(*b)))
        .collect();
    line("weights if stored as", est.join(", "));
    if let Some(b) = r.weight_bytes_on_disk {
        line("weights on disk", bytes(b));
    }
    if let Some(by) = &r.tensors_by_dtype {
        for d in by {
            line(
                "",
                format!(
                    "{:<8} {:>6} tensors {:>12}",
                    d.dtype,
                    d.count,
                    bytes(d.bytes)
                ),
            );
        }
    }
    line(
        "KV cache (16-bit)",
        format!(
            "{} per token, {} per 1,000 tokens",
            bytes(r.kv_cache_bytes_per_token),
            bytes(r.kv_cache_bytes_per_1k_tokens)
        ),
    );
    line("KV cache holds", r.kv_cache_layout.clone());
    line(
        "tokenizer",
        r.tokenizer.clone().unwrap_or_else(|| "not found".into()),
    );
    line(
        "chat template",
        r.chat_template
            .clone()
            .unwrap_or_else(|| "not found".into()),
    );
    s
}

/// `frugal inspect PATH [--json]`.
pub fn run(spec: &str, json: bool) -> anyhow::Result<()> {
    let input = load(spec)?;
    let r = report(&input);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).context("serialising the report")?
        );
    } else {
        print!("{}", render_text(&r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plug point for file readers: known tensors give per-type counts and on-disk bytes.
    #[test]
    fn known_tensors_are_summarised_by_type() {
        let config = ModelConfig::from_hf_str(
            r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 256, "hidden_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}"#,
        )
        .expect("OK because the config is complete");
        let tensors: Vec<TensorInfo> = tensor_plan(&config)
            .into_iter()
            .map(|t| {
                let dtype = if t.shape.len() == 1 {
                    DType::F32
                } else {
                    DType::Q8_0
                };
                let rows = t.numel() as usize / t.shape.last().copied().unwrap_or(1);
                let nbytes = rows * dtype.row_bytes(*t.shape.last().unwrap_or(&1)).unwrap_or(0);
                TensorInfo {
                    name: t.name,
                    dtype,
                    shape: t.shape,
                    nbytes,
                }
            })
            .collect();
        let expected: u64 = tensors.iter().map(|t| t.nbytes as u64).sum();
        let input = InspectInput {
            source: "test".into(),
            config,
            tensors: Some(tensors),
            tokenizer: None,
            chat_template: None,
        };
        let r = report(&input);
        assert_eq!(r.weight_bytes_on_disk, Some(expected));
        let by = r
            .tensors_by_dtype
            .as_ref()
            .expect("OK because tensors were given");
        let names: Vec<&str> = by.iter().map(|d| d.dtype.as_str()).collect();
        assert_eq!(names, ["F32", "Q8_0"]);
        // 2 layer norms x 2 layers + final norm; q/k/v/o + 3 MLP per layer + embedding + head.
        assert_eq!((by[0].count, by[1].count), (5, 2 * 7 + 2));
        assert!(render_text(&r).contains("weights on disk"));
    }
}
