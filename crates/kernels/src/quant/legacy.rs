//! The 32-weight block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (`ggml-common.h`,
//! `dequantize_row_q4_0` … in `ggml-quants.c`).
//!
//! Each block has an f16 scale `d` (and for the `_1` types an f16 offset `m`):
//! `w = d·q` with a signed code (`q − 8`, `q − 16`, or an i8), or `w = d·q + m` with an unsigned
//! one. 4-bit codes are packed two per byte: byte `j`'s low nibble is weight `j`, its high
//! nibble weight `j + 16`. The 5-bit types keep the fifth bit of weight `j` in bit `j` of the
//! little-endian u32 `qh`.

use super::{f16_le, QuantBlock, QuantType};

/// Weights per block of these types (ggml's `QK4_0`, `QK8_0`, ...).
pub const QK: usize = 32;

/// Q4_0: `d: f16, qs: [u8; 16]`, `w = d·(q − 8)`; 18 bytes per 32 weights = 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_0 {
    /// Scale (f16, little-endian).
    pub d: [u8; 2],
    /// 4-bit codes: low nibbles weights 0..16, high nibbles 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`, `w = d·q + m`; 20 bytes per 32 weights = 5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Offset (f16): the block minimum.
    pub m: [u8; 2],
    /// 4-bit codes, as Q4_0.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// Q5_0: `d: f16, qh: u32, qs: [u8; 16]`, `w = d·(q − 16)`; 22 bytes per 32 weights = 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Fifth bits (u32, little-endian): bit `j` belongs to weight `j`.
    pub qh: [u8; 4],
    /// Low 4 bits, as Q4_0.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// Q5_1: `d: f16, m: f16, qh: u32, qs: [u8; 16]`, `w = d·q + m`; 24 bytes per 32 weights = 6 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Offset (f16).
    pub m: [u8; 2],
    /// Fifth bits, as Q5_0.
    pub qh: [u8; 4],
    /// Low 4 bits, as Q4_0.
    pub qs: [u8; 16],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Q8_0: `d: f16, qs: [i8; 32]`, `w = d·q`; 34 bytes per 32 weights = 8.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// Signed 8-bit codes.
    pub qs: [i8; 32],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// The 32 codes of a 4-bit block, in weight order (low nibbles, then high nibbles).
#[inline]
fn nibbles(qs: &[u8; 16]) -> [u8; QK] {
    std::array::from_fn(|i| {
        if i < 16 {
            qs[i] & 0x0f
        } else {
            qs[i - 16] >> 4
        }
    })
}

/// The 32 codes of a 5-bit block: nibble plus bit `i` of `qh` as bit 4.
#[inline]
fn fives(qs: &[u8; 16], qh: [u8; 4]) -> [u8; QK] {
    let qh = u32::from_le_bytes(qh);
    let lo = nibbles(qs);
    std::array::from_fn(|i| lo[i] | ((((qh >> i) & 1) as u8) << 4))
}

/// `(Σ q_i·x_i, Σ x_i)` for 32 codes.
#[inline]
fn sums(q: &[u8; QK], x: &[f32]) -> (f32, f32) {
    let x = &x[..QK];
    let mut qx = 0.0f32;
    let mut sx = 0.0f32;
    for (&q, &x) in q.iter().zip(x) {
        qx += q as f32 * x;
        sx += x;
    }
    (qx, sx)
}

/// `Σ (q_i − offset)·x_i` for 32 codes: the signed codes, so that no cancellation between
/// `Σ q·x` and `offset·Σ x` costs precision.
#[inline]
fn signed_dot(q: &[u8; QK], offset: i32, x: &[f32]) -> f32 {
    q.iter()
        .zip(&x[..QK])
        .map(|(&q, &x)| (q as i32 - offset) as f32 * x)
        .sum()
}

// SAFETY (all impls below): repr(C) structs of u8/i8 arrays only: alignment 1, no padding,
// every bit pattern valid.

unsafe impl QuantBlock for BlockQ4_0 {
    const TYPE: QuantType = QuantType::Q4_0;
    const BLOCK_SIZE: usize = QK;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for (o, q) in out[..QK].iter_mut().zip(nibbles(&self.qs)) {
            *o = (q as i32 - 8) as f32 * d;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        f16_le(self.d) * signed_dot(&nibbles(&self.qs), 8, x)
    }
}

unsafe impl QuantBlock for BlockQ4_1 {
    const TYPE: QuantType = QuantType::Q4_1;
    const BLOCK_SIZE: usize = QK;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        for (o, q) in out[..QK].iter_mut().zip(nibbles(&self.qs)) {
            *o = q as f32 * d + m;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let (qx, sx) = sums(&nibbles(&self.qs), x);
        f16_le(self.d) * qx + f16_le(self.m) * sx
    }
}

unsafe impl QuantBlock for BlockQ5_0 {
    const TYPE: QuantType = QuantType::Q5_0;
    const BLOCK_SIZE: usize = QK;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for (o, q) in out[..QK].iter_mut().zip(fives(&self.qs, self.qh)) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        f16_le(self.d) * signed_dot(&fives(&self.qs, self.qh), 16, x)
    }
}

unsafe impl QuantBlock for BlockQ5_1 {
    const TYPE: QuantType = QuantType::Q5_1;
    const BLOCK_SIZE: usize = QK;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        for (o, q) in out[..QK].iter_mut().zip(fives(&self.qs, self.qh)) {
            *o = q as f32 * d + m;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let (qx, sx) = sums(&fives(&self.qs, self.qh), x);
        f16_le(self.d) * qx + f16_le(self.m) * sx
    }
}

unsafe impl QuantBlock for BlockQ8_0 {
    const TYPE: QuantType = QuantType::Q8_0;
    const BLOCK_SIZE: usize = QK;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let qx: f32 = self
            .qs
            .iter()
            .zip(&x[..QK])
            .map(|(&q, &x)| q as f32 * x)
            .sum();
        f16_le(self.d) * qx
    }
}
