//! DeepSeek V2 / V2-Lite / V3 / R1 (`DeepseekV2ForCausalLM`, `DeepseekV3ForCausalLM`): MLA,
//! then a dense MLP in the first `first_k_dense_replace` layers and DeepSeekMoE (routed and
//! shared experts, `mlp.experts.E`, `mlp.shared_experts`, router `mlp.gate`) after.

use super::Ctx;
use crate::blocks::ffn::MlpNames;
use crate::transformer::{Attn, Ffn};
use crate::ModelError;

pub(super) fn blocks<'a>(cx: &Ctx<'a, '_>, l: usize) -> Result<(Attn<'a>, Ffn<'a>), ModelError> {
    Ok((cx.mla(l)?, cx.moe_or_dense(l, "mlp", MlpNames::PROJ)?))
}
