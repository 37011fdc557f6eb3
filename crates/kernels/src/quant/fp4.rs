//! MXFP4 (OCP Microscaling FP4, as in gpt-oss checkpoints): `ggml-common.h`'s `block_mxfp4`,
//! `dequantize_row_mxfp4` in `ggml-quants.c`.
//!
//! 32 FP4 (E2M1) weights share one E8M0 scale (a bare biased exponent, `2^(e − 127)`). ggml
//! stores the E2M1 values doubled, as integers ([`KVALUES_MXFP4`]), and halves the scale to
//! match: `w = KVALUES[q] · 2^(e − 128)`. Codes are packed as in Q4_0 (byte `j`: weight `j` in
//! the low nibble, `j + 16` in the high one).

use super::{QuantBlock, QuantType};

/// E2M1 values doubled (ggml's `kvalues_mxfp4`): codes 0..8 are +0, 0.5, 1, 1.5, 2, 3, 4, 6
/// times two; 8..16 the same negated.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// MXFP4: `e: u8 (E8M0), qs: [u8; 16]`, `w = KVALUES[q]·2^(e − 128)`; 17 bytes per 32 weights =
/// 4.25 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockMXFP4 {
    /// Shared E8M0 exponent.
    pub e: [u8; 1],
    /// FP4 codes: low nibbles weights 0..16, high nibbles 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockMXFP4>() == 17);

/// `2^(e − 128)`, half the E8M0 value, built from its bits as ggml's `ggml_e8m0_to_fp32_half`
/// does: e = 0 and 1 give the f32 subnormals 2^-128 and 2^-127. (E8M0's NaN, 255, is read as
/// 2^127, as in ggml.)
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

#[inline]
fn kvalue(qs: &[u8; 16], j: usize) -> f32 {
    let nib = if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    };
    KVALUES_MXFP4[nib as usize] as f32
}

// SAFETY: repr(C) struct of u8 arrays only: alignment 1, no padding, every bit pattern valid.
unsafe impl QuantBlock for BlockMXFP4 {
    const TYPE: QuantType = QuantType::MXFP4;
    const BLOCK_SIZE: usize = 32;

    fn dequantize(&self, out: &mut [f32]) {
        let d = e8m0_to_f32_half(self.e[0]);
        for (j, o) in out[..32].iter_mut().enumerate() {
            *o = kvalue(&self.qs, j) * d;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..32]
            .iter()
            .enumerate()
            .map(|(j, &x)| kvalue(&self.qs, j) * x)
            .sum();
        e8m0_to_f32_half(self.e[0]) * s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_values() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        assert_eq!(e8m0_to_f32_half(128), 1.0);
        assert_eq!(e8m0_to_f32_half(0), 2f32.powi(-128));
        assert_eq!(e8m0_to_f32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_f32_half(2), 2f32.powi(-126));
        assert_eq!(e8m0_to_f32_half(255), 2f32.powi(127));
    }
}
