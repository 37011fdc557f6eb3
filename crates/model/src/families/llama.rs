//! Llama and R1-Distill-Llama (`LlamaForCausalLM`): GQA (biases on q/k/v/o when
//! `attention_bias`), llama3 rope scaling where configured, a dense MLP.

use super::Ctx;
use crate::transformer::{Attn, Ffn};
use crate::ModelError;

pub(super) fn blocks<'a>(cx: &Ctx<'a, '_>, l: usize) -> Result<(Attn<'a>, Ffn<'a>), ModelError> {
    Ok((cx.gqa(l)?, cx.dense(l)?))
}
