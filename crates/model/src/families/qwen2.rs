//! Qwen2 and R1-Distill-Qwen (`Qwen2ForCausalLM`): GQA with a bias on q/k/v (the config sets
//! `qkv_bias`), a sliding window from `max_window_layers` on when `use_sliding_window`, and a
//! dense MLP.

use super::Ctx;
use crate::transformer::{Attn, Ffn};
use crate::ModelError;

pub(super) fn blocks<'a>(cx: &Ctx<'a, '_>, l: usize) -> Result<(Attn<'a>, Ffn<'a>), ModelError> {
    Ok((cx.gqa(l)?, cx.dense(l)?))
}
