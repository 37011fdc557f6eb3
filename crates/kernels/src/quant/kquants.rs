//! The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (`ggml-common.h`, `dequantize_row_q2_K` … in
//! `ggml-quants.c`).
//!
//! A 256-weight super-block holds f16 super-scales (`d`, and `dmin` for the types with
//! offsets) and small per-sub-block integer scales: Q2_K/Q3_K/Q6_K have 16 sub-blocks of 16
//! weights, Q4_K/Q5_K 8 of 32. A weight is `(d·sc)·q − dmin·m` (Q2_K, Q4_K, Q5_K) or
//! `(d·sc)·q` (Q3_K, Q6_K, with signed `sc` and `q`), evaluated in f32 in that order as ggml and
//! gguf-py do. Bit-plane layouts, per type below, follow ggml's ordering of the packed codes.

use super::{f16_le, QuantBlock, QuantType, QK_K};

/// Q2_K: `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`; sub-block `s` (16 weights) has
/// scale `scales[s] & 15` and offset `scales[s] >> 4`; 2-bit codes. 84 bytes per 256 weights =
/// 2.625 bits per weight.
///
/// Code layout: for half `h` (128 weights) and plane `j` (0..4), weight `128h + 32j + l`
/// (`l` < 32) is bits `2j..2j+2` of `qs[32h + l]`; its sub-block is `8h + 2j + l/16`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ2K {
    /// 4-bit scale (low) and 4-bit offset (high) per 16-weight sub-block.
    pub scales: [u8; 16],
    /// 2-bit codes.
    pub qs: [u8; 64],
    /// Super-scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-scale of the offsets (f16).
    pub dmin: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// Q3_K: `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`; 16 signed 6-bit sub-block
/// scales (stored +32), 3-bit codes stored as 2 low bits plus a high bit whose *absence*
/// subtracts 4: `q = low − 4·(1 − high)`. 110 bytes per 256 weights = 3.4375 bits per weight.
///
/// Code layout: as Q2_K for the low bits; weight `128h + 32j + l`'s high bit is bit `4h + j` of
/// `hmask[l]`. Scale `s`: low nibble of `scales[s]` (`s` < 8) or high nibble of `scales[s − 8]`,
/// and bits `2(s/4)..` of `scales[8 + s%4]` as bits 4..6.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ3K {
    /// High bits of the codes.
    pub hmask: [u8; 32],
    /// Low 2 bits of the codes.
    pub qs: [u8; 64],
    /// Packed 6-bit scales.
    pub scales: [u8; 12],
    /// Super-scale (f16).
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; 8 sub-blocks of 32 with 6-bit
/// scales and offsets (see [`scale_min_k4`]), 4-bit codes. 144 bytes per 256 weights = 4.5 bits
/// per weight.
///
/// Code layout: for chunk `c` (64 weights), weight `64c + l` is the low nibble of
/// `qs[32c + l]` (sub-block `2c`) and `64c + 32 + l` its high nibble (sub-block `2c + 1`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    /// Super-scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-scale of the offsets (f16).
    pub dmin: [u8; 2],
    /// Packed 6-bit scales and offsets.
    pub scales: [u8; 12],
    /// 4-bit codes.
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q5_K: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K plus a
/// fifth bit: weight `64c + l` takes bit `2c` of `qh[l]`, `64c + 32 + l` bit `2c + 1`.
/// 176 bytes per 256 weights = 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    /// Super-scale of the scales (f16).
    pub d: [u8; 2],
    /// Super-scale of the offsets (f16).
    pub dmin: [u8; 2],
    /// Packed 6-bit scales and offsets.
    pub scales: [u8; 12],
    /// Fifth bits of the codes.
    pub qh: [u8; 32],
    /// Low 4 bits of the codes.
    pub qs: [u8; 128],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; 16 sub-blocks of 16 with i8
/// scales, 6-bit codes stored +32. 210 bytes per 256 weights = 6.5625 bits per weight.
///
/// Code layout: for half `h` (128 weights) and `l` < 32, with `L = ql[64h..]`, `H = qh[32h..]`:
/// weight `128h + l` = low nibble of `L[l]` | bits 0..2 of `H[l]` << 4; `+32`: low nibble of
/// `L[l + 32]` | bits 2..4; `+64`: high nibble of `L[l]` | bits 4..6; `+96`: high nibble of
/// `L[l + 32]` | bits 6..8. Sub-block of weight `i` is `i / 16`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    /// Low 4 bits of the codes.
    pub ql: [u8; 128],
    /// High 2 bits of the codes.
    pub qh: [u8; 64],
    /// Signed 8-bit sub-block scales.
    pub scales: [i8; 16],
    /// Super-scale (f16).
    pub d: [u8; 2],
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

/// Scale and offset of sub-block `j` (0..8) of Q4_K/Q5_K's 12 packed bytes (ggml's
/// `get_scale_min_k4`): sub-blocks 0..4 are the low 6 bits of bytes `j` and `j + 4`; 4..8 take
/// their low 4 bits from byte `j + 4`'s nibbles and their top 2 bits from the spare top bits of
/// bytes `j − 4` and `j`.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q3_K's 16 sub-block scales, unpacked and re-centred (`− 32`).
#[inline]
fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    std::array::from_fn(|i| {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

/// Code `i` (weight order) of Q2_K/Q3_K's 2-bit `qs`.
#[inline]
fn two_bit_code(qs: &[u8; 64], i: usize) -> u8 {
    let (h, j, l) = (i / 128, (i % 128) / 32, i % 32);
    (qs[32 * h + l] >> (2 * j)) & 3
}

/// Q3_K's signed 3-bit code `i`: low 2 bits, − 4 unless its hmask bit is set.
#[inline]
fn q3k_code(b: &BlockQ3K, i: usize) -> i8 {
    let (h, j, l) = (i / 128, (i % 128) / 32, i % 32);
    let high = (b.hmask[l] >> (4 * h + j)) & 1;
    two_bit_code(&b.qs, i) as i8 - if high == 0 { 4 } else { 0 }
}

/// Code `i` of Q4_K/Q5_K's 4-bit `qs`.
#[inline]
fn four_bit_code(qs: &[u8; 128], i: usize) -> u8 {
    let (c, half, l) = (i / 64, (i % 64) / 32, i % 32);
    (qs[32 * c + l] >> (4 * half)) & 0x0f
}

/// Q5_K's 5-bit code `i`.
#[inline]
fn q5k_code(b: &BlockQ5K, i: usize) -> u8 {
    let (c, half, l) = (i / 64, (i % 64) / 32, i % 32);
    four_bit_code(&b.qs, i) | (((b.qh[l] >> (2 * c + half)) & 1) << 4)
}

/// Q6_K's signed 6-bit code `i`.
#[inline]
fn q6k_code(b: &BlockQ6K, i: usize) -> i8 {
    let (h, quarter, l) = (i / 128, (i % 128) / 32, i % 32);
    let lo = (b.ql[64 * h + l + 32 * (quarter & 1)] >> (4 * (quarter >> 1))) & 0x0f;
    let hi = (b.qh[32 * h + l] >> (2 * quarter)) & 3;
    (lo | (hi << 4)) as i8 - 32
}

/// Per sub-block of `SUB` weights, `(Σ q·x, Σ x)` over codes `code(i)` and `x` (256 values).
/// Fused: codes are read as they are summed, nothing is written out.
#[inline]
fn sub_sums<const SUB: usize, const N: usize>(
    code: impl Fn(usize) -> f32,
    x: &[f32],
) -> [(f32, f32); N] {
    let x = &x[..QK_K];
    std::array::from_fn(|s| {
        let mut qx = 0.0f32;
        let mut sx = 0.0f32;
        for (k, &x) in x[s * SUB..(s + 1) * SUB].iter().enumerate() {
            qx += code(s * SUB + k) * x;
            sx += x;
        }
        (qx, sx)
    })
}

/// Writes `scale(s)·code(i) − offset(s)` for the sub-blocks `s` of `SUB` weights.
#[inline]
fn write_scaled<const SUB: usize>(
    out: &mut [f32],
    scale_offset: impl Fn(usize) -> (f32, f32),
    code: impl Fn(usize) -> f32,
) {
    for (s, o) in out[..QK_K].chunks_exact_mut(SUB).enumerate() {
        let (dl, ml) = scale_offset(s);
        for (k, o) in o.iter_mut().enumerate() {
            *o = dl * code(s * SUB + k) - ml;
        }
    }
}

// SAFETY (all impls below): repr(C) structs of u8/i8 arrays only: alignment 1, no padding,
// every bit pattern valid.

unsafe impl QuantBlock for BlockQ2K {
    const TYPE: QuantType = QuantType::Q2K;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (f16_le(self.d), f16_le(self.dmin));
        let sc = |s: usize| {
            let sc = self.scales[s];
            (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32)
        };
        write_scaled::<16>(out, sc, |i| two_bit_code(&self.qs, i) as f32);
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let (d, dmin) = (f16_le(self.d), f16_le(self.dmin));
        let sums = sub_sums::<16, 16>(|i| two_bit_code(&self.qs, i) as f32, x);
        let mut acc = 0.0f32;
        for (&sc, (qx, sx)) in self.scales.iter().zip(sums) {
            acc += d * (sc & 0x0f) as f32 * qx - dmin * (sc >> 4) as f32 * sx;
        }
        acc
    }
}

unsafe impl QuantBlock for BlockQ3K {
    const TYPE: QuantType = QuantType::Q3K;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        let scales = q3k_scales(&self.scales);
        // − 0.0 is exact: x − 0 = x for every f32 x (−0 − 0 = −0).
        write_scaled::<16>(
            out,
            |s| (d * scales[s] as f32, 0.0),
            |i| q3k_code(self, i) as f32,
        );
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let d = f16_le(self.d);
        let sums = sub_sums::<16, 16>(|i| q3k_code(self, i) as f32, x);
        let mut acc = 0.0f32;
        for (sc, (qx, _)) in q3k_scales(&self.scales).into_iter().zip(sums) {
            acc += d * sc as f32 * qx;
        }
        acc
    }
}

/// Q4_K/Q5_K: `(d·sc)·q − dmin·m` over 8 sub-blocks of 32.
#[inline]
fn dequantize_k4(
    d: f32,
    dmin: f32,
    scales: &[u8; 12],
    code: impl Fn(usize) -> f32,
    out: &mut [f32],
) {
    let sc = |s| {
        let (sc, m) = scale_min_k4(s, scales);
        (d * sc as f32, dmin * m as f32)
    };
    write_scaled::<32>(out, sc, code);
}

#[inline]
fn vec_dot_k4(d: f32, dmin: f32, scales: &[u8; 12], code: impl Fn(usize) -> f32, x: &[f32]) -> f32 {
    let sums = sub_sums::<32, 8>(code, x);
    let mut acc = 0.0f32;
    for (s, (qx, sx)) in sums.into_iter().enumerate() {
        let (sc, m) = scale_min_k4(s, scales);
        acc += d * sc as f32 * qx - dmin * m as f32 * sx;
    }
    acc
}

unsafe impl QuantBlock for BlockQ4K {
    const TYPE: QuantType = QuantType::Q4K;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let code = |i| four_bit_code(&self.qs, i) as f32;
        dequantize_k4(f16_le(self.d), f16_le(self.dmin), &self.scales, code, out);
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let code = |i| four_bit_code(&self.qs, i) as f32;
        vec_dot_k4(f16_le(self.d), f16_le(self.dmin), &self.scales, code, x)
    }
}

unsafe impl QuantBlock for BlockQ5K {
    const TYPE: QuantType = QuantType::Q5K;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let code = |i| q5k_code(self, i) as f32;
        dequantize_k4(f16_le(self.d), f16_le(self.dmin), &self.scales, code, out);
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let code = |i| q5k_code(self, i) as f32;
        vec_dot_k4(f16_le(self.d), f16_le(self.dmin), &self.scales, code, x)
    }
}

unsafe impl QuantBlock for BlockQ6K {
    const TYPE: QuantType = QuantType::Q6K;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_le(self.d);
        let sc = |s: usize| (d * self.scales[s] as f32, 0.0);
        write_scaled::<16>(out, sc, |i| q6k_code(self, i) as f32);
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let d = f16_le(self.d);
        let sums = sub_sums::<16, 16>(|i| q6k_code(self, i) as f32, x);
        let mut acc = 0.0f32;
        for (&sc, (qx, _)) in self.scales.iter().zip(sums) {
            acc += d * sc as f32 * qx;
        }
        acc
    }
}
