//! Qwen3-MoE (`Qwen3MoeForCausalLM`): GQA with per-head q/k RMSNorm (`q_norm`, `k_norm`, set by
//! the config's `qk_norm`) and an explicit `head_dim`; MoE at `mlp` (router `mlp.gate`,
//! experts `mlp.experts.E.{gate,up,down}_proj`, softmax top-k renormalised when
//! `norm_topk_prob`), dense in `mlp_only_layers` and between `decoder_sparse_step`s.

use super::Ctx;
use crate::blocks::ffn::MlpNames;
use crate::transformer::{Attn, Ffn};
use crate::ModelError;

pub(super) fn blocks<'a>(cx: &Ctx<'a, '_>, l: usize) -> Result<(Attn<'a>, Ffn<'a>), ModelError> {
    Ok((cx.gqa(l)?, cx.moe_or_dense(l, "mlp", MlpNames::PROJ)?))
}
