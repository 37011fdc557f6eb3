//! The reference: per block the exact i32 `Σ c_i·q_i`, then `(d_w·d_a)·Σ (+ m_w·s_a)`, the
//! terms added in f32 in block order.

use super::{scale_f32, ActBlock, Block32, Codes, Scale};
use crate::quant::legacy::QK;

pub(super) fn dot<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    let mut sum = 0.0f32;
    for (w, a) in w.iter().zip(a) {
        let c = codes(w);
        let sumi: i32 = c
            .iter()
            .zip(a.qs())
            .map(|(&c, &q)| c as i32 * q as i32)
            .sum();
        sum += term(w, a, sumi);
    }
    sum
}

/// A block's f32 term from its integer sum: `(d_w·d_a)·sumi (+ m_w·s_a)`.
#[inline]
pub(super) fn term<B: Block32>(w: &B, a: &B::Act, sumi: i32) -> f32 {
    let d = w.scale() * scale_f32(Scale::F16, a.d_bits());
    let t = d * sumi as f32;
    if B::HAS_MIN {
        t + scale_f32(Scale::F16, w.min_bits()) * scale_f32(Scale::F16, a.s_bits())
    } else {
        t
    }
}

/// The 32 codes `c_i` of a block, in weight order.
pub(super) fn codes<B: Block32>(w: &B) -> [i8; QK] {
    let qs = w.qs();
    let nibble = |i: usize| {
        if i < 16 {
            qs[i] & 0x0f
        } else {
            qs[i - 16] >> 4
        }
    };
    match B::CODES {
        Codes::Nibbles { offset } => std::array::from_fn(|i| nibble(i) as i8 - offset),
        Codes::Fives { offset } => {
            let qh = w.qh();
            std::array::from_fn(|i| (nibble(i) | (((qh >> i) & 1) as u8) << 4) as i8 - offset)
        }
        Codes::Bytes => std::array::from_fn(|i| qs[i] as i8),
        Codes::Table(t) => std::array::from_fn(|i| t[nibble(i) as usize]),
    }
}
