//! Per-family choices: which blocks each decoder layer uses and what the checkpoint calls their
//! tensors. The decoder itself is [`crate::transformer`]; every family shares its embeddings
//! (`model.embed_tokens`), final norm (`model.norm`), `lm_head` and the per-layer
//! `input_layernorm` / `post_attention_layernorm`.
//!
//! | family | attention (`self_attn`) | feed-forward |
//! |---|---|---|
//! | [`deepseek`] V2/V3 | MLA | `mlp`: dense below `first_k_dense_replace`, else MoE + shared |
//! | [`qwen2`] | GQA, q/k/v bias | `mlp`: dense |
//! | [`llama`] | GQA (`attention_bias`: q/k/v/o bias) | `mlp`: dense |
//! | [`qwen3_moe`] | GQA, q/k RMSNorm per head | `mlp`: MoE, dense in `mlp_only_layers` |
//! | [`mixtral`] | GQA | `block_sparse_moe`: MoE, experts `w1`/`w3`/`w2` |

mod deepseek;
mod llama;
mod mixtral;
mod qwen2;
mod qwen3_moe;

use frugal_formats::config::{Architecture, Attention, ModelConfig};

use crate::blocks::ffn::{Mlp, MlpNames, Moe};
use crate::blocks::gqa::{GqaAttention, GqaLayout};
use crate::blocks::linear::{load_f32_vec, Weights};
use crate::blocks::mla::MlaAttention;
use crate::blocks::rope::softmax_scale;
use crate::transformer::{Attn, Ffn, Layer};
use crate::ModelError;

/// What every family's loader needs.
pub(crate) struct Ctx<'a, 'c> {
    pub(crate) src: &'c dyn Weights<'a>,
    pub(crate) config: &'c ModelConfig,
    pub(crate) fp8_block: usize,
    /// q/k rows interleaved per head for llama.cpp's rope (GGUF Llama/Mixtral).
    pub(crate) qk_interleaved: bool,
}

/// Decoder layer `l` of the model `cx` describes.
pub(crate) fn layer<'a>(cx: &Ctx<'a, '_>, l: usize) -> Result<Layer<'a>, ModelError> {
    let (attn, ffn) = match cx.config.architecture {
        Architecture::DeepseekV2 | Architecture::DeepseekV3 => deepseek::blocks(cx, l)?,
        Architecture::Qwen2 => qwen2::blocks(cx, l)?,
        Architecture::Llama => llama::blocks(cx, l)?,
        Architecture::Qwen3Moe => qwen3_moe::blocks(cx, l)?,
        Architecture::Mixtral => mixtral::blocks(cx, l)?,
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                architecture: other.to_string(),
                loader: "transformer",
            })
        }
    };
    let h = cx.config.hidden_size;
    let pre = format!("model.layers.{l}");
    Ok(Layer {
        input_norm: load_f32_vec(cx.src, &format!("{pre}.input_layernorm.weight"), &[h])?,
        attn,
        post_attn_norm: load_f32_vec(
            cx.src,
            &format!("{pre}.post_attention_layernorm.weight"),
            &[h],
        )?,
        ffn,
    })
}

impl<'a> Ctx<'a, '_> {
    fn wrong_attention(&self) -> ModelError {
        ModelError::UnsupportedArchitecture {
            architecture: format!(
                "{} with {} attention",
                self.config.architecture,
                match self.config.attention {
                    Attention::Mla(_) => "MLA",
                    Attention::Gqa(_) => "GQA",
                }
            ),
            loader: "transformer",
        }
    }

    /// MLA at `model.layers.L.self_attn`.
    fn mla(&self, l: usize) -> Result<Attn<'a>, ModelError> {
        let Attention::Mla(m) = &self.config.attention else {
            return Err(self.wrong_attention());
        };
        let scale = softmax_scale(m.qk_head_dim(), &self.config.rope);
        Ok(Attn::Mla(MlaAttention::load(
            self.src,
            &format!("model.layers.{l}.self_attn"),
            self.config.hidden_size,
            m,
            scale,
            self.fp8_block,
        )?))
    }

    /// GQA at `model.layers.L.self_attn`; the sliding window (when configured) applies from
    /// its `first_layer` on (transformers' `layer_types`).
    fn gqa(&self, l: usize) -> Result<Attn<'a>, ModelError> {
        let Attention::Gqa(g) = &self.config.attention else {
            return Err(self.wrong_attention());
        };
        let layout = GqaLayout {
            hidden: self.config.hidden_size,
            rotary_dim: self.config.rope.rotary_dim,
            sliding: g
                .sliding_window
                .as_ref()
                .is_some_and(|w| l >= w.first_layer),
            eps: self.config.rms_norm_eps as f32,
            interleaved: self.qk_interleaved,
        };
        Ok(Attn::Gqa(GqaAttention::load(
            self.src,
            &format!("model.layers.{l}.self_attn"),
            g,
            layout,
            self.fp8_block,
        )?))
    }

    /// The dense SwiGLU MLP at `model.layers.L.mlp`.
    fn dense(&self, l: usize) -> Result<Ffn<'a>, ModelError> {
        if self.config.ffn.mlp_bias {
            return Err(ModelError::UnsupportedConfig {
                what: "MLP with biases (mlp_bias)".into(),
            });
        }
        Ok(Ffn::Dense(Mlp::load(
            self.src,
            &format!("model.layers.{l}.mlp"),
            self.config.hidden_size,
            self.config.ffn.intermediate_size,
            self.fp8_block,
        )?))
    }

    /// The MoE block at `model.layers.L.{block}` with experts' projections `names`, when the
    /// config makes layer `l` an MoE layer; otherwise the dense MLP.
    fn moe_or_dense(&self, l: usize, block: &str, names: MlpNames) -> Result<Ffn<'a>, ModelError> {
        match self.config.ffn.moe.as_ref().filter(|m| m.is_moe_layer(l)) {
            Some(moe) => Ok(Ffn::Moe(Moe::load_named(
                self.src,
                l,
                &format!("model.layers.{l}.{block}"),
                names,
                self.config.hidden_size,
                moe,
                self.fp8_block,
            )?)),
            None => self.dense(l),
        }
    }
}
