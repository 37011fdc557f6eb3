//! F32, F16 and BF16 rows against f32 activations (float weights are not paired with
//! quantized activations: the safetensors path stays as exact as transformers').

use crate::cpu::Isa;
use crate::quant::{as_blocks, BlockBF16, BlockF16, BlockF32, QuantBlock};

pub(super) fn f32(_isa: Isa, row: &[u8], x: &[f32]) -> f32 {
    scalar::<BlockF32>(row, x)
}

pub(super) fn f16(_isa: Isa, row: &[u8], x: &[f32]) -> f32 {
    scalar::<BlockF16>(row, x)
}

pub(super) fn bf16(_isa: Isa, row: &[u8], x: &[f32]) -> f32 {
    scalar::<BlockBF16>(row, x)
}

fn scalar<B: QuantBlock>(row: &[u8], x: &[f32]) -> f32 {
    // OK because `vec_dot` checked the length.
    let w: &[B] = as_blocks(row).expect("row length checked");
    w.iter()
        .zip(x.chunks_exact(B::BLOCK_SIZE))
        .map(|(b, x)| b.vec_dot(x))
        .sum()
}
