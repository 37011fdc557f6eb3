//! Bytes of weights one decode step reads: the memory traffic that bounds generation speed.
//!
//! Decoding a token reads every weight once, except two kinds: the token embedding (one row is
//! looked up) and the routed experts (each MoE layer runs only `num_experts_per_tok` of its
//! `num_experts`). Summing the stored byte sizes of the loaded tensors with those two discounts
//! gives the bytes per token a memory-bandwidth-bound engine must stream; tokens/s times this
//! is the weight bandwidth achieved. Routed bytes are the expected value over a uniform choice
//! of experts (a batch of one token reads exactly `k` experts per layer; their sizes are equal).

use frugal_formats::config::ModelConfig;
use frugal_formats::TensorInfo;

/// Decode-step weight bytes by part. Sizes are as stored (quantized blocks included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActiveBytes {
    /// One row of the token embedding (all of it when it doubles as the LM head).
    pub embedding_row: u64,
    /// The LM head (output projection), read whole.
    pub lm_head: u64,
    /// `k / E` of the routed experts' bytes.
    pub routed_experts: u64,
    /// Everything else: attention, dense MLPs, shared experts, routers, norms, biases.
    pub dense: u64,
    /// All weights in the files (main layers; MTP layers excluded), for reference.
    pub total: u64,
}

impl ActiveBytes {
    /// Bytes read per decode token.
    pub fn per_token(&self) -> u64 {
        self.embedding_row + self.lm_head + self.routed_experts + self.dense
    }
}

/// What a stored tensor is, from its name (Hugging Face or GGUF/llama.cpp naming).
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Embedding,
    LmHead,
    /// Routed experts, stacked (GGUF `*_exps`) or one expert each (`mlp.experts.N.`).
    Routed,
    Other,
    /// A layer past `num_hidden_layers` (DeepSeek-V3's multi-token-prediction module).
    Mtp,
}

fn classify(name: &str, layers: usize) -> Part {
    let layer = name
        .strip_prefix("model.layers.")
        .or_else(|| name.strip_prefix("blk."))
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok());
    if layer.is_some_and(|l| l >= layers) {
        return Part::Mtp;
    }
    if name.starts_with("token_embd.") || name.ends_with("embed_tokens.weight") {
        Part::Embedding
    } else if name.starts_with("output.") || name.starts_with("lm_head.") {
        Part::LmHead
    } else if name.contains("_exps.")
        || name.contains(".mlp.experts.")
        || name.contains(".block_sparse_moe.experts.")
    {
        Part::Routed
    } else {
        Part::Other
    }
}

/// Bytes one decode step reads, from the model's config and its files' tensors
/// (`TensorSource::tensor_infos`).
pub fn active_bytes(cfg: &ModelConfig, tensors: &[TensorInfo]) -> ActiveBytes {
    let layers = cfg.num_hidden_layers;
    let (k, e) = cfg.ffn.moe.as_ref().map_or((1, 1), |m| {
        (m.num_experts_per_tok as u64, m.num_experts.max(1) as u64)
    });
    let has_head = tensors
        .iter()
        .any(|t| classify(&t.name, layers) == Part::LmHead);
    let mut out = ActiveBytes::default();
    for t in tensors {
        let bytes = t.nbytes as u64;
        match classify(&t.name, layers) {
            Part::Mtp => continue,
            Part::Embedding if has_head => {
                out.embedding_row += bytes / (cfg.vocab_size.max(1) as u64);
            }
            // Tied: the embedding is also the LM head, read whole.
            Part::Embedding => out.embedding_row += bytes,
            Part::LmHead => out.lm_head += bytes,
            Part::Routed => out.routed_experts += bytes * k / e,
            Part::Other => out.dense += bytes,
        }
        out.total += bytes;
    }
    out
}

#[cfg(test)]
mod tests {
    use frugal_formats::DType;

    use super::*;

    fn info(name: &str, nbytes: usize) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: DType::F32,
            shape: vec![nbytes / 4],
            nbytes,
        }
    }

    #[test]
    fn classify_names() {
        assert_eq!(classify("blk.3.ffn_up_exps.weight", 27), Part::Routed);
        assert_eq!(
            classify("model.layers.3.mlp.experts.12.up_proj.weight", 27),
            Part::Routed
        );
        assert_eq!(
            classify("model.layers.3.mlp.shared_experts.up_proj.weight", 27),
            Part::Other
        );
        assert_eq!(classify("blk.3.ffn_up_shexp.weight", 27), Part::Other);
        assert_eq!(classify("blk.27.ffn_up_exps.weight", 27), Part::Mtp);
        assert_eq!(classify("output.weight", 27), Part::LmHead);
        assert_eq!(classify("output_norm.weight", 27), Part::Other);
        assert_eq!(classify("token_embd.weight", 27), Part::Embedding);
        assert_eq!(classify("model.embed_tokens.weight", 27), Part::Embedding);
    }

    #[test]
    fn discounts_embedding_rows_and_unrouted_experts() {
        let path =
            frugal_testdata::fixtures_dir().join("gguf/deepseek-v2-lite/deepseek-v2-lite-F32.gguf");
        let files = frugal_formats::ModelFiles::open_path(&path, &|_, _| {}).unwrap();
        let cfg = files.config().unwrap();
        let infos = files.tensors().unwrap().tensor_infos();
        let a = active_bytes(&cfg, &infos);
        // The fixture: vocab 512, hidden 32, 8 experts of which 3 are used, F32.
        assert_eq!(a.embedding_row, 32 * 4);
        assert_eq!(a.lm_head, 512 * 32 * 4);
        // 26 MoE layers x 3 stacked tensors of 8 experts x 16 x 32 f32; 3 of 8 read.
        assert_eq!(a.routed_experts, 26 * 3 * (8 * 16 * 32 * 4) * 3 / 8);
        let all: u64 = infos.iter().map(|t| t.nbytes as u64).sum();
        assert_eq!(a.total, all);
        assert_eq!(
            a.dense,
            all - 512 * 32 * 4 - 512 * 32 * 4 - 26 * 3 * (8 * 16 * 32 * 4)
        );
    }

    #[test]
    fn tied_embedding_is_read_whole() {
        let cfg_json = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2",
            "vocab_size":10,"hidden_size":4,"num_hidden_layers":1,"num_attention_heads":1,
            "num_key_value_heads":1,"intermediate_size":8,"tie_word_embeddings":true}"#;
        let cfg = ModelConfig::from_hf_str(cfg_json).unwrap();
        let a = active_bytes(
            &cfg,
            &[
                info("model.embed_tokens.weight", 160),
                info("model.layers.0.mlp.up_proj.weight", 128),
            ],
        );
        assert_eq!(a.embedding_row, 160);
        assert_eq!(a.dense, 128);
        assert_eq!(a.per_token(), 288);
    }
}
