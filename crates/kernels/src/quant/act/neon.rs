//! NEON activation quantizers, byte-equal to the scalar references in `mod.rs`, as `x86.rs`
//! is: per value the same IEEE product (no fused multiply-add), the same rounding (Q8_K:
//! `nearest_int`'s add of 1.5·2²³; Q8_0: half away from zero, which `frinta` is), and the
//! same scale (the maximum of |v| is exact in any order; Q8_K's `max` is the first value
//! attaining it). Blocks holding a NaN or an infinity go to the references.

use super::{QK, QK_K};
use std::arch::aarch64::*;

/// The largest |v| of the `n` values at `p` (a multiple of 4), and whether every value is
/// finite (else the maximum is meaningless).
///
/// # Safety
/// `n` readable values at `p`.
unsafe fn amax(p: *const f32, n: usize) -> (f32, bool) {
    // SAFETY (whole body): NEON is part of AArch64; loads inside the caller's `n` values.
    unsafe {
        let inf = vdupq_n_f32(f32::INFINITY);
        let mut m = vdupq_n_f32(0.0);
        let mut bad = vdupq_n_u32(0);
        for i in 0..n / 4 {
            let a = vabsq_f32(vld1q_f32(p.add(4 * i)));
            m = vmaxq_f32(m, a);
            // Not below ∞: an infinity or a NaN.
            bad = vorrq_u32(bad, vmvnq_u32(vcltq_f32(a, inf)));
        }
        (vmaxvq_f32(m), vmaxvq_u32(bad) == 0)
    }
}

/// Sixteen i32 lanes (each in i8 range) as sixteen bytes in lane order.
#[inline]
fn narrow16(q: [int32x4_t; 4]) -> int8x16_t {
    // SAFETY: NEON is part of AArch64; register operations only.
    unsafe {
        let lo = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
        let hi = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
        vcombine_s8(vmovn_s16(lo), vmovn_s16(hi))
    }
}

/// One Q8_K block: 256 values into `d: f32, qs: [i8; 256], bsums: [i16; 16]` (292 bytes).
pub(super) fn quantize_q8k_block(x: &[f32], out: &mut [u8]) {
    assert!(x.len() == QK_K && out.len() == 4 + QK_K + 2 * (QK_K / 16));
    let p = x.as_ptr();
    // SAFETY: 256 readable values at `p`.
    let (amax, finite) = unsafe { amax(p, QK_K) };
    if !finite || amax == 0.0 {
        // All zeros (the reference writes a zero block), or a NaN or infinity: the
        // reference's scalar comparisons decide.
        return super::quantize_q8k_block(x, out);
    }
    // The first value whose |v| is the maximum, as the reference's strict `>` keeps.
    let max = *x
        .iter()
        .find(|v| v.abs() == amax)
        .expect("amax is some |v|");
    let iscale = -127.0 / max;
    // SAFETY: NEON is part of AArch64; every load reads 4 values inside `x` (16 groups of
    // 16), every store writes 16 bytes inside `out[4..260]`.
    unsafe {
        let vs = vdupq_n_f32(iscale);
        let magic = vdupq_n_f32(12_582_912.0);
        let mant = vdupq_n_s32(0x007f_ffff);
        let bias = vdupq_n_s32(0x0040_0000);
        let top = vdupq_n_s32(127);
        let qs = out.as_mut_ptr().add(4);
        for j in 0..QK_K / 16 {
            let q: [int32x4_t; 4] = std::array::from_fn(|k| {
                let v = vmulq_f32(vs, vld1q_f32(p.add(16 * j + 4 * k)));
                let f = vreinterpretq_s32_f32(vaddq_f32(v, magic));
                vminq_s32(vsubq_s32(vandq_s32(f, mant), bias), top)
            });
            let codes = narrow16(q);
            vst1q_s8(qs.add(16 * j).cast(), codes);
            // Each 16 codes summed exactly as i16 (|Σ| ≤ 16·128).
            let sum = vaddlvq_s8(codes);
            let at = 4 + QK_K + 2 * j;
            out[at..at + 2].copy_from_slice(&sum.to_le_bytes());
        }
    }
    out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

/// One Q8_0 block: 32 values into `d: f16, qs: [i8; 32]` (34 bytes).
pub(super) fn quantize_q8_0_block(x: &[f32], out: &mut [u8]) {
    assert!(x.len() == QK && out.len() == 2 + QK);
    let p = x.as_ptr();
    // SAFETY: 32 readable values at `p`.
    let (amax, finite) = unsafe { amax(p, QK) };
    if !finite {
        // NaN or infinity: the reference's `f32::max` and casts decide.
        return super::quantize_q8_0_block(x, out);
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // SAFETY: NEON is part of AArch64; loads of 4 values inside `x`, 16-byte stores inside
    // `out[2..34]`.
    unsafe {
        let vid = vdupq_n_f32(id);
        let qs = out.as_mut_ptr().add(2);
        for j in 0..QK / 16 {
            let q: [int32x4_t; 4] = std::array::from_fn(|k| {
                let v = vmulq_f32(vld1q_f32(p.add(16 * j + 4 * k)), vid);
                // `roundf`: to nearest, halves away from zero; then exact to integer.
                vcvtq_s32_f32(vrndaq_f32(v))
            });
            vst1q_s8(qs.add(16 * j).cast(), narrow16(q));
        }
    }
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
}
