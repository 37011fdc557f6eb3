//! Q2_K … Q6_K and IQ4_XS rows against Q8_K activations.

use super::dequantized_dot;
use crate::cpu::Isa;
use crate::quant::act::BlockQ8K;
use crate::quant::{BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};

pub(super) fn q2_k(_isa: Isa, w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q3_k(_isa: Isa, w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q4_k(_isa: Isa, w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q5_k(_isa: Isa, w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q6_k(_isa: Isa, w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn iq4_xs(_isa: Isa, w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    dequantized_dot(w, a)
}
