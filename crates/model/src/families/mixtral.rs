//! Mixtral (`MixtralForCausalLM`): GQA (a sliding window on every layer when `sliding_window`
//! is set), and in every layer an MoE at `block_sparse_moe` (router `block_sparse_moe.gate`,
//! experts `block_sparse_moe.experts.E.{w1,w3,w2}` = gate, up, down; softmax over all experts,
//! top-k, renormalised).

use super::Ctx;
use crate::blocks::ffn::MlpNames;
use crate::transformer::{Attn, Ffn};
use crate::ModelError;

pub(super) fn blocks<'a>(cx: &Ctx<'a, '_>, l: usize) -> Result<(Attn<'a>, Ffn<'a>), ModelError> {
    Ok((
        cx.gqa(l)?,
        cx.moe_or_dense(l, "block_sparse_moe", MlpNames::W123)?,
    ))
}
