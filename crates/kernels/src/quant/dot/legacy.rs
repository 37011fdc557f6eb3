//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and MXFP4 rows against Q8_0 / Q8_1 activations.

use super::dequantized_dot;
use crate::cpu::Isa;
use crate::quant::act::BlockQ8_1;
use crate::quant::{BlockIQ4NL, BlockMXFP4, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};

pub(super) fn q4_0(_isa: Isa, w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q4_1(_isa: Isa, w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q5_0(_isa: Isa, w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q5_1(_isa: Isa, w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn q8_0(_isa: Isa, w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn iq4_nl(_isa: Isa, w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    dequantized_dot(w, a)
}

pub(super) fn mxfp4(_isa: Isa, w: &[BlockMXFP4], a: &[BlockQ8_0]) -> f32 {
    dequantized_dot(w, a)
}
