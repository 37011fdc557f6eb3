//! IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256) as llama.cpp's `quantize_iq4_nl` and
//! `quantize_iq4_xs` write them without an importance matrix.
//!
//! Codes index the fixed non-uniform table [`KVALUES_IQ4NL`] (−127…113). Per 32 weights, the
//! scale starts at `max / 127` (the largest-magnitude value on the table's −127 end) and 15 more
//! candidates `max / (−127 + k)`, k = −7…7, are tried; each maps every weight to its nearest
//! table value and keeps the scale maximising the weighted least-squares score
//! `(Σw·q·x)² / Σw·q²` (weights x²). IQ4_XS then quantizes the 8 sub-block scales to signed
//! 6 bits against an f16 super-scale `−max_scale/32` and re-picks every code with its stored
//! scale.

use super::{f16_bytes, nearest_int, GROUP_MAX_EPS};
use crate::quant::iquants::KVALUES_IQ4NL;

/// Number of candidate scales on each side of the first guess (ggml's `ntry`).
const NTRY: i32 = 7;

/// Index of the table value nearest `x` (ties to the upper one, as ggml's `best_index_int8`).
fn best_index(x: f32) -> u8 {
    let v = |i: usize| KVALUES_IQ4NL[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The best scale of 32 weights, or 0 for an all-zero group; the codes it gives go to `l`.
fn block_scale(x: &[f32], l: &mut [u8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES_IQ4NL[0] as f32;
    let mut d = -max / v0;
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (o, &xv) in l.iter_mut().zip(x) {
        let i = best_index(id * xv);
        *o = i;
        let q = KVALUES_IQ4NL[i as usize] as f32;
        let w = xv * xv;
        sumqx += w * q * xv;
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for &xv in x {
            let q = KVALUES_IQ4NL[best_index(id * xv) as usize] as f32;
            let w = xv * xv;
            sumqx += w * q * xv;
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Codes `l` (one per weight) packed two per byte: in each 32, weight `i` < 16 low nibble of
/// byte `i`, weight `16 + i` its high nibble.
fn pack4(l: &[u8], qs: &mut [u8]) {
    for (q, l) in qs.chunks_exact_mut(16).zip(l.chunks_exact(32)) {
        for i in 0..16 {
            q[i] = l[i] | (l[16 + i] << 4);
        }
    }
}

/// IQ4_NL: `d: f16, qs: [u8; 16]`.
pub fn iq4_nl(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 32];
    let d = block_scale(x, &mut l);
    out[0..2].copy_from_slice(&f16_bytes(d));
    // Codes are re-picked with the chosen (f32) scale.
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in l.iter_mut().zip(x) {
        *o = best_index(id * v);
    }
    pack4(&l, &mut out[2..18]);
}

/// IQ4_XS: `d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]` (bytes 0, 2, 4, 8).
pub fn iq4_xs(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for ib in 0..8 {
        let d = block_scale(&x[32 * ib..32 * ib + 32], &mut l[32 * ib..32 * ib + 32]);
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let d = -max_scale / 32.0;
    out[0..2].copy_from_slice(&f16_bytes(d));
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (mut scales_h, mut scales_l) = (0u16, [0u8; 4]);
    for ib in 0..8 {
        let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
        // The codes use the f32 super-scale times the integer scale (not the f16-rounded one).
        let dl = d * ls as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        for (o, &v) in l[32 * ib..32 * ib + 32]
            .iter_mut()
            .zip(&x[32 * ib..32 * ib + 32])
        {
            *o = best_index(idl * v);
        }
        let ls = (ls + 32) as u8;
        scales_l[ib / 2] |= (ls & 0xf) << (4 * (ib % 2));
        scales_h |= ((ls >> 4) as u16) << (2 * ib);
    }
    out[2..4].copy_from_slice(&scales_h.to_le_bytes());
    out[4..8].copy_from_slice(&scales_l);
    pack4(&l, &mut out[8..136]);
}
