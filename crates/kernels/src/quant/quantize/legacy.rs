//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 blocks of 32 (`quantize_row_q4_0_ref` … `quantize_row_q8_0_ref`).
//!
//! Each function takes one block's 32 weights and writes the block's bytes (layouts in
//! [`crate::quant::legacy`]).
//!
//! The symmetric types take the value of largest magnitude *with its sign* (`max`) and put it
//! on the most negative code: `d = max / −8` (Q4_0) or `max / −16` (Q5_0), so the code range
//! [−8, 7] is used in full on the side of that value. Codes are `trunc(x/d + 8.5)` capped at 15
//! (a truncating cast, not a rounding: `+ 0.5` rounds up halves). The `_1` types map [min, max]
//! onto [0, 15] or [0, 31] with `d = (max − min) / 15` and offset `min`. Q8_0 rounds `x/d` half
//! away from zero with `d = amax / 127`.

use super::f16_bytes;

/// 32 weights: `(value of largest |x| with its sign, …)`, first one wins ties (`amax < |v|`).
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `1/d`, or 0 for a zero scale.
fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Q4_0: `d: f16, qs: [u8; 16]`; weight `j` < 16 in the low nibble of `qs[j]`, `16 + j` in the
/// high nibble.
pub fn q4_0(x: &[f32], out: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = inv(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    for j in 0..16 {
        let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = ((x[16 + j] * id + 8.5) as i8).min(15) as u8;
        out[2 + j] = lo | (hi << 4);
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]` (nibbles as Q4_0).
pub fn q4_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inv(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(min));
    for j in 0..16 {
        let lo = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let hi = (((x[16 + j] - min) * id + 0.5) as i8).min(15) as u8;
        out[4 + j] = lo | (hi << 4);
    }
}

/// The 5-bit codes `q` of a Q5 block packed as `(qh: u32 of fifth bits, qs: low nibbles)`.
fn pack5(q: impl Fn(usize) -> u8, qs: &mut [u8]) -> u32 {
    let mut qh = 0u32;
    for (j, b) in qs.iter_mut().enumerate() {
        let (lo, hi) = (q(j), q(16 + j));
        *b = (lo & 0x0f) | ((hi & 0x0f) << 4);
        qh |= (((lo & 0x10) >> 4) as u32) << j;
        qh |= (((hi & 0x10) >> 4) as u32) << (j + 16);
    }
    qh
}

/// Q5_0: `d: f16, qh: [u8; 4], qs: [u8; 16]`; weight `j`'s fifth bit is bit `j` of `qh`.
pub fn q5_0(x: &[f32], out: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = inv(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    let qh = pack5(
        |j| ((x[j] * id + 16.5) as i8).min(31) as u8,
        &mut out[6..22],
    );
    out[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Q5_1: `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`.
pub fn q5_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inv(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    out[2..4].copy_from_slice(&f16_bytes(min));
    // No cap at 31 here (ggml has none): the largest value lands on 31 + 0.5 at most.
    let qh = pack5(|j| ((x[j] - min) * id + 0.5) as u8, &mut out[8..24]);
    out[4..8].copy_from_slice(&qh.to_le_bytes());
}

/// Q8_0: `d: f16, qs: [i8; 32]`, `q = round(x/d)` half away from zero, `d = amax/127`.
pub fn q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    out[0..2].copy_from_slice(&f16_bytes(d));
    for (o, &v) in out[2..34].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}
