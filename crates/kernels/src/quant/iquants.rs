//! The non-linear 4-bit types IQ4_NL and IQ4_XS (`ggml-common.h`, `dequantize_row_iq4_nl`
//! and `dequantize_row_iq4_xs` in `ggml-quants.c`).
//!
//! Both map a 4-bit code through a fixed 16-entry table of signed values ([`KVALUES_IQ4NL`],
//! denser near zero) and scale it: IQ4_NL with one f16 scale per 32 weights, IQ4_XS with an f16
//! super-scale times a 6-bit signed scale per 32-weight sub-block of a 256-weight block.
//! Codes are packed as in Q4_0: byte `j` of a 32-weight group holds weight `j` (low nibble)
//! and `j + 16` (high nibble).
//!
//! The other IQ types (IQ1_S/IQ1_M, IQ2_XXS/XS/S, IQ3_XXS/S) index lattice grids tables instead;
//! they would follow the same pattern with their grids as constant tables.

use super::{f16_le, QuantBlock, QuantType, QK_K};

/// The IQ4_NL code book (ggml's `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: `d: f16, qs: [u8; 16]`, `w = d·KVALUES[q]`; 18 bytes per 32 weights = 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockIQ4NL {
    /// Scale (f16).
    pub d: [u8; 2],
    /// 4-bit code-book indices: low nibbles weights 0..16, high nibbles 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockIQ4NL>() == 18);

/// IQ4_XS: `d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]`; sub-block `s` (32
/// weights) has scale `ls − 32` with `ls` = nibble `s % 2` of `scales_l[s / 2]` | bits
/// `2s..2s+2` of `scales_h` << 4; `w = (d·(ls − 32))·KVALUES[q]`. 136 bytes per 256 weights =
/// 4.25 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockIQ4XS {
    /// Super-scale (f16).
    pub d: [u8; 2],
    /// High 2 bits of the 8 sub-block scales (u16, little-endian).
    pub scales_h: [u8; 2],
    /// Low 4 bits of the 8 sub-block scales.
    pub scales_l: [u8; 4],
    /// 4-bit code-book indices, 16 bytes per sub-block, packed as IQ4_NL.
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockIQ4XS>() == 136);

/// The code-book value of weight `j` (0..32) of a 16-byte nibble group.
#[inline]
fn kvalue(qs: &[u8], j: usize) -> f32 {
    let nib = if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    };
    KVALUES_IQ4NL[nib as usize] as f32
}

impl BlockIQ4XS {
    /// The signed scale of sub-block `s` (0..8).
    #[inline]
    fn sub_scale(&self, s: usize) -> i32 {
        let h = u16::from_le_bytes(self.scales_h);
        let ls = ((self.scales_l[s / 2] >> (4 * (s % 2))) & 0x0f) as i32
            | ((((h >> (2 * s)) & 3) as i32) << 4);
        ls - 32
    }
}

// SAFETY (both impls): repr(C) structs of u8 arrays only: alignment 1, no padding, every bit
// pattern valid.

unsafe impl QuantBlock for BlockIQ4NL {
    const TYPE: QuantType = QuantType::IQ4NL;
    const BLOCK_SIZE: usize = 32;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for (j, o) in out[..32].iter_mut().enumerate() {
            *o = d * kvalue(&self.qs, j);
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = x[..32]
            .iter()
            .enumerate()
            .map(|(j, &x)| kvalue(&self.qs, j) * x)
            .sum();
        f16_le(self.d) * s
    }
}

unsafe impl QuantBlock for BlockIQ4XS {
    const TYPE: QuantType = QuantType::IQ4XS;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for (s, o) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let dl = d * self.sub_scale(s) as f32;
            let qs = &self.qs[16 * s..16 * s + 16];
            for (j, o) in o.iter_mut().enumerate() {
                *o = dl * kvalue(qs, j);
            }
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let d = f16_le(self.d);
        let mut acc = 0.0f32;
        for (s, xs) in x[..QK_K].chunks_exact(32).enumerate() {
            let qs = &self.qs[16 * s..16 * s + 16];
            let qx: f32 = xs.iter().enumerate().map(|(j, &x)| kvalue(qs, j) * x).sum();
            acc += d * self.sub_scale(s) as f32 * qx;
        }
        acc
    }
}
