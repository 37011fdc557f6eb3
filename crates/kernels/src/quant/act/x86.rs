//! AVX2 activation quantizers, byte-equal to the scalar references in `mod.rs`.
//!
//! Equality rests on doing per value exactly what the reference does: the same IEEE product
//! `iscale·v` (Q8_K) or `v·id` (Q8_0) with no fused multiply-add, the same rounding (Q8_K:
//! `nearest_int`'s add of 1.5·2²³; Q8_0: half away from zero, as `roundf`, built from a
//! truncation and the exact remainder), and the same scale: the scalars `amax`, `max` and the
//! divisions are computed as in the reference (the maximum of |v| is exact in any order, and
//! Q8_K's `max` is the first value attaining it, as the reference's strict `>` keeps).

use super::{QK, QK_K};
use std::arch::x86_64::*;

/// Horizontal maximum of eight non-negative lanes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}

/// |v| lane by lane (clears the sign bit, as `f32::abs`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// The largest |v| of the `n` values at `p` (a multiple of 8), and whether every value is
/// finite (else the maximum is meaningless).
///
/// # Safety
/// AVX2; `n` readable values at `p`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn amax(p: *const f32, n: usize) -> (f32, bool) {
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut m = _mm256_setzero_ps();
    let mut bad = _mm256_setzero_ps();
    for i in 0..n / 8 {
        // SAFETY: inside the caller's `n` values.
        let a = abs(unsafe { _mm256_loadu_ps(p.add(8 * i)) });
        m = _mm256_max_ps(m, a);
        // |v| ≥ ∞ or unordered: an infinity or a NaN.
        bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLT_UQ>(a, inf));
    }
    (hmax(m), _mm256_movemask_ps(bad) == 0)
}

/// Eight i32 lanes (each in i8 range) as eight bytes in lane order.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pack8(q: __m256i) -> i64 {
    let w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
    _mm_cvtsi128_si64(_mm_packs_epi16(w, w))
}

/// One Q8_K block: 256 values into `d: f32, qs: [i8; 256], bsums: [i16; 16]` (292 bytes).
///
/// # Safety
/// AVX2 must be available; `x` is 256 values and `out` 292 bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_q8k_block(x: &[f32], out: &mut [u8]) {
    assert!(x.len() == QK_K && out.len() == 4 + QK_K + 2 * (QK_K / 16));
    let p = x.as_ptr();
    // SAFETY: every load below reads inside `x` (32 vectors of 8), every store inside `out`.
    unsafe {
        let (amax, finite) = amax(p, QK_K);
        if !finite || amax == 0.0 {
            // All zeros (the reference writes a zero block), or a NaN or infinity, where the
            // reference's scalar comparisons decide: let it.
            return super::quantize_q8k_block(x, out);
        }
        // The first value whose |v| is the maximum, as the reference's strict `>` keeps.
        let target = _mm256_set1_ps(amax);
        let mut max = 0.0f32;
        for i in 0..QK_K / 8 {
            let v = _mm256_loadu_ps(p.add(8 * i));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs(v), target));
            if hit != 0 {
                max = x[8 * i + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let vs = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12_582_912.0);
        let mant = _mm256_set1_epi32(0x007f_ffff);
        let bias = _mm256_set1_epi32(0x0040_0000);
        let top = _mm256_set1_epi32(127);
        let qs = out.as_mut_ptr().add(4);
        for i in 0..QK_K / 8 {
            let v = _mm256_mul_ps(vs, _mm256_loadu_ps(p.add(8 * i)));
            let f = _mm256_add_ps(v, magic);
            let q = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(f), mant), bias);
            let q = _mm256_min_epi32(q, top);
            qs.add(8 * i).cast::<i64>().write_unaligned(pack8(q));
        }
        // bsums: each 16 codes, summed as i16 (|Σ| ≤ 16·128). Codes + 128 are unsigned, so
        // `psadbw` against zero sums each 8; take the 128·16 back off.
        let bsums = out.as_mut_ptr().add(4 + QK_K);
        let flip = _mm_set1_epi8(-128);
        for j in 0..QK_K / 16 {
            let c = _mm_xor_si128(_mm_loadu_si128(qs.add(16 * j).cast()), flip);
            let s = _mm_sad_epu8(c, _mm_setzero_si128());
            let sum = _mm_cvtsi128_si32(s) + _mm_extract_epi16::<4>(s) - 128 * 16;
            bsums
                .add(2 * j)
                .cast::<[u8; 2]>()
                .write_unaligned((sum as i16).to_le_bytes());
        }
        out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// One Q8_0 block: 32 values into `d: f16, qs: [i8; 32]` (34 bytes).
///
/// # Safety
/// AVX2 must be available; `x` is 32 values and `out` 34 bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_q8_0_block(x: &[f32], out: &mut [u8]) {
    assert!(x.len() == QK && out.len() == 2 + QK);
    let p = x.as_ptr();
    // SAFETY: four 8-value loads inside `x`; 8-byte stores inside `out[2..34]`.
    unsafe {
        let (amax, finite) = amax(p, QK);
        if !finite {
            // NaN or infinity: the reference's `f32::max` and casts decide.
            return super::quantize_q8_0_block(x, out);
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let vid = _mm256_set1_ps(id);
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        let qs = out.as_mut_ptr().add(2);
        for i in 0..QK / 8 {
            let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), vid);
            // roundf: truncate, then step away from zero when the exact remainder is ≥ ½.
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
            let rem = abs(_mm256_sub_ps(v, t));
            let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(rem, half), one);
            let r = _mm256_add_ps(t, _mm256_or_ps(up, _mm256_and_ps(v, sign)));
            qs.add(8 * i)
                .cast::<i64>()
                .write_unaligned(pack8(_mm256_cvttps_epi32(r)));
        }
        out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    }
}
