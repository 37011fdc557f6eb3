//! x86-64 paths of the interleaved Q4_K and Q6_K products: eight rows in the eight i32/f32
//! lanes of a 256-bit vector, activations broadcast four bytes at a time.
//!
//! A 32-byte load of codes is four bytes of each of the eight rows (module docs); its low
//! nibbles meet the four activations of sub-block `2c` at that position, its high nibbles
//! those of sub-block `2c + 1`, each broadcast to all eight lanes. AVX2 multiplies with
//! `pmaddubsw` (i16 pairs, summed over a sub-block's eight loads: at most
//! `8·2·15·128 = 30720 < 2^15`) and applies the sub-block scale with `pmaddwd`; VNNI sums
//! with `vpdpbusd` and scales with `vpmulld`. The offsets' term `Σ_s m_s·(bsum_2s +
//! bsum_2s+1)` is four `pmaddwd` of (offset pair) × (bsum pair) per block. Q6_K's codes
//! `u = q + 32` (6 bits) are summed per 16-weight sub-block (AVX2: two `pmaddubsw` at most,
//! `2·2·63·128 < 2^15`, then `pmaddwd` by ones), less `32·bsum_s`, times the scale.

pub(super) mod tile;

use super::{CODES, D, DMIN, MINS, RECORD, ROWS, SCALES};
use crate::quant::BlockQ8K;
use std::arch::x86_64::*;

/// Bytes `p..p+32`, any alignment.
#[inline(always)]
pub(super) unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The four activation bytes at `p` in every i32 lane.
#[inline(always)]
pub(super) unsafe fn bcast4(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    _mm256_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// One record's offsets term and float step, shared by both paths: `isum` (eight row
/// lanes) is the block's exact scaled code sum; returns `acc + (dall·isum − dm·summs)` per
/// lane with IEEE products and sums in `vec_dot`'s order (no fused multiply-add).
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn finish(rec: *const u8, a: &BlockQ8K, isum: __m256i, acc: __m256) -> __m256 {
    // SAFETY: `rec` is a whole record (RECORD bytes); `bsums` is 32 bytes.
    unsafe {
        // bsum_2s + bsum_2s+1 for s = 0..8 as i16 (|·| ≤ 2·16·128): pairs (2t, 2t + 1) per
        // i32 lane t.
        let bs = load32(a.bsums.as_ptr().cast());
        let bp = _mm_hadd_epi16(
            _mm256_castsi256_si128(bs),
            _mm256_extracti128_si256::<1>(bs),
        );
        let bp = _mm256_castsi128_si256(bp);
        let mut summs = _mm256_setzero_si256();
        for t in 0..4 {
            let pair = _mm256_permutevar8x32_epi32(bp, _mm256_set1_epi32(t as i32));
            summs = _mm256_add_epi32(summs, _mm256_madd_epi16(mins(rec, t), pair));
        }
        float_step(rec, a.d(), isum, summs, acc)
    }
}

/// Lane r: the offsets `(m_{r,2t}, m_{r,2t+1})` as i16.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn mins(rec: *const u8, t: usize) -> __m256i {
    // SAFETY: 16 bytes inside the record.
    unsafe { _mm256_cvtepu8_epi16(_mm_loadu_si128(rec.add(MINS + 16 * t).cast())) }
}

/// `vec_dot`'s Q4_K float step for the eight lanes: `dall = d_a·d`, `dm = d_a·dmin`,
/// `acc + (dall·isum − dm·summs)`, no fused multiply-add.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn float_step(
    rec: *const u8,
    da: f32,
    isum: __m256i,
    summs: __m256i,
    acc: __m256,
) -> __m256 {
    // SAFETY: 32 bytes inside the record.
    let (d, dmin) = unsafe {
        (
            _mm256_cvtph_ps(_mm_loadu_si128(rec.add(D).cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(rec.add(DMIN).cast())),
        )
    };
    let ad = _mm256_set1_ps(da);
    let (dall, dm) = (_mm256_mul_ps(ad, d), _mm256_mul_ps(ad, dmin));
    let t = _mm256_sub_ps(
        _mm256_mul_ps(dall, _mm256_cvtepi32_ps(isum)),
        _mm256_mul_ps(dm, _mm256_cvtepi32_ps(summs)),
    );
    _mm256_add_ps(acc, t)
}

/// Sub-block `s`'s eight row scales as i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn scales(rec: *const u8, s: usize) -> __m256i {
    // SAFETY: 8 bytes inside the record.
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(rec.add(SCALES + 8 * s).cast())) }
}

/// The AVX2 path (also taken for AVX-512 without VNNI).
///
/// # Safety
/// AVX2, FMA and F16C must be available; `recs` must hold `a.len()` records.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2(recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (j, a) in a.iter().enumerate() {
        // SAFETY: record `j` is inside `recs` (the caller's contract); every offset below is
        // inside the record and `a.qs` (256 bytes).
        unsafe {
            let rec = recs.as_ptr().add(j * RECORD);
            let mut isum = _mm256_setzero_si256();
            for c in 0..4 {
                let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for q in 0..8 {
                    let x = load32(rec.add(CODES + 256 * c + 32 * q));
                    let al = bcast4(a.qs.as_ptr().add(64 * c + 4 * q));
                    let ah = bcast4(a.qs.as_ptr().add(64 * c + 32 + 4 * q));
                    let xl = _mm256_and_si256(x, m4);
                    let xh = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
                    lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(xl, al));
                    hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(xh, ah));
                }
                // The scale in both i16 halves of lane r: pmaddwd adds the pair and scales.
                let sl = scales(rec, 2 * c);
                let sh = scales(rec, 2 * c + 1);
                let sl = _mm256_or_si256(sl, _mm256_slli_epi32::<16>(sl));
                let sh = _mm256_or_si256(sh, _mm256_slli_epi32::<16>(sh));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(lo, sl));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(hi, sh));
            }
            acc = finish(rec, a, isum, acc);
        }
    }
    // SAFETY: `out` is 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// The AVX-512 VNNI path (256-bit `vpdpbusd`).
///
/// # Safety
/// AVX2, FMA, F16C, AVX-512 F/VL/VNNI must be available; `recs` must hold `a.len()` records.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn vnni(recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (j, a) in a.iter().enumerate() {
        // SAFETY: as in `avx2`.
        unsafe {
            let rec = recs.as_ptr().add(j * RECORD);
            let mut isum = _mm256_setzero_si256();
            for c in 0..4 {
                // Two chains per nibble half (even and odd q): `vpdpbusd` has a latency of
                // several cycles, and one chain of eight per half left the product waiting on
                // it (in cache: 48 GB/s). i32 sums are exact in any order.
                let mut lo = [_mm256_setzero_si256(); 2];
                let mut hi = [_mm256_setzero_si256(); 2];
                for q in 0..8 {
                    let x = load32(rec.add(CODES + 256 * c + 32 * q));
                    let al = bcast4(a.qs.as_ptr().add(64 * c + 4 * q));
                    let ah = bcast4(a.qs.as_ptr().add(64 * c + 32 + 4 * q));
                    let xl = _mm256_and_si256(x, m4);
                    let xh = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
                    lo[q % 2] = _mm256_dpbusd_epi32(lo[q % 2], xl, al);
                    hi[q % 2] = _mm256_dpbusd_epi32(hi[q % 2], xh, ah);
                }
                let (lo, hi) = (
                    _mm256_add_epi32(lo[0], lo[1]),
                    _mm256_add_epi32(hi[0], hi[1]),
                );
                isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(lo, scales(rec, 2 * c)));
                isum = _mm256_add_epi32(isum, _mm256_mullo_epi32(hi, scales(rec, 2 * c + 1)));
            }
            acc = finish(rec, a, isum, acc);
        }
    }
    // SAFETY: `out` is 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// Q6_K: the codes `u = q + 32` of one half `h`, position group `q` (four weights `l =
/// 4q..4q+4` of each quarter `t`, for the eight rows): low nibbles from `ql` (quarters 0, 1
/// from the low nibbles of bytes `64h + l` and `64h + 32 + l`, quarters 2, 3 from their high
/// nibbles), bits 4..6 from `qh`'s bit pairs `2t..2t+2`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn codes_q6k(rec: *const u8, h: usize, q: usize) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0f);
    // SAFETY: three 32-byte loads inside the record.
    let (l0, l1, hb) = unsafe {
        let p = rec.add(super::q6::step(h, q));
        (load32(p), load32(p.add(32)), load32(p.add(64)))
    };
    // Masking before each 16-bit shift keeps bits inside their byte.
    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hb, _mm256_set1_epi8(0x03)));
    let h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(hb, _mm256_set1_epi8(0x0c)));
    let h2 = _mm256_and_si256(hb, _mm256_set1_epi8(0x30));
    let h3 = _mm256_srli_epi16::<2>(_mm256_and_si256(hb, _mm256_set1_epi8(0xc0u8 as i8)));
    [
        _mm256_or_si256(_mm256_and_si256(l0, m4), h0),
        _mm256_or_si256(_mm256_and_si256(l1, m4), h1),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4), h2),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4), h3),
    ]
}

/// Q6_K: one sub-block's row sums `Σ u·a` (i32 lanes) made `Σ (u − 32)·a` and scaled:
/// `sc_s·(dot − 32·bsum_s)`, added to `isum`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn q6k_scaled(
    rec: *const u8,
    a: &BlockQ8K,
    s: usize,
    dot: __m256i,
    isum: __m256i,
) -> __m256i {
    use super::q6::SCALES;
    let off = _mm256_set1_epi32(32 * a.bsum(s) as i32);
    // SAFETY: 8 bytes inside the record.
    let sc = unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(rec.add(SCALES + 8 * s).cast())) };
    _mm256_add_epi32(isum, _mm256_mullo_epi32(_mm256_sub_epi32(dot, off), sc))
}

/// Q6_K's float step: `acc + (d_a·d)·isum` per lane, as `vec_dot` (no fused multiply-add).
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn q6k_finish(rec: *const u8, a: &BlockQ8K, isum: __m256i, acc: __m256) -> __m256 {
    use super::q6::D;
    // SAFETY: 16 bytes inside the record.
    let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(rec.add(D).cast()) });
    let dall = _mm256_mul_ps(_mm256_set1_ps(a.d()), d);
    _mm256_add_ps(acc, _mm256_mul_ps(dall, _mm256_cvtepi32_ps(isum)))
}

/// The Q6_K product; `$dot(sums, t)` adds quarter `t`'s `Σ u·a` (four weights of each row,
/// codes `$u[t]`, activations at `$aq`) to a sub-block's i32 row sums.
macro_rules! q6k_body {
    ($recs:expr, $a:expr, $out:expr, |$u:ident, $aq:ident| $dot:expr) => {{
        use super::q6::RECORD;
        let mut acc = _mm256_setzero_ps();
        for (j, a) in $a.iter().enumerate() {
            // SAFETY: record `j` is inside `recs` (the caller's contract); every offset is
            // inside it and inside `a.qs` (256 bytes).
            unsafe {
                let rec = $recs.as_ptr().add(j * RECORD);
                let mut isum = _mm256_setzero_si256();
                for h in 0..2 {
                    for half in 0..2 {
                        // Sub-blocks 8h + 2t + half, t = 0..4: weights 128h + 32t + 16·half + l.
                        let mut dots = [_mm256_setzero_si256(); 4];
                        for q in 4 * half..4 * half + 4 {
                            let $u = codes_q6k(rec, h, q);
                            for (t, d) in dots.iter_mut().enumerate() {
                                let $aq = a.qs.as_ptr().add(128 * h + 32 * t + 4 * q);
                                *d = $dot(*d, t);
                            }
                        }
                        for (t, &d) in dots.iter().enumerate() {
                            isum = q6k_scaled(rec, a, 8 * h + 2 * t + half, d, isum);
                        }
                    }
                }
                acc = q6k_finish(rec, a, isum, acc);
            }
        }
        // SAFETY: `out` is 8 f32.
        unsafe { _mm256_storeu_ps($out.as_mut_ptr(), acc) };
    }};
}

/// Q6_K on AVX2 (also for AVX-512 without VNNI): `pmaddubsw` pairs (`2·63·128 < 2^15`)
/// widened at once by `pmaddwd` with ones.
///
/// # Safety
/// As [`avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn avx2_q6k(recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    let ones = _mm256_set1_epi16(1);
    q6k_body!(recs, a, out, |u, aq| |d: __m256i, t: usize| {
        let p = _mm256_maddubs_epi16(u[t], bcast4(aq));
        _mm256_add_epi32(d, _mm256_madd_epi16(p, ones))
    })
}

/// Q6_K on AVX-512 VNNI.
///
/// # Safety
/// As [`vnni`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn vnni_q6k(recs: &[u8], a: &[BlockQ8K], out: &mut [f32; ROWS]) {
    q6k_body!(recs, a, out, |u, aq| |d: __m256i, t: usize| {
        _mm256_dpbusd_epi32(d, u[t], bcast4(aq))
    })
}
