//! Multi-token tiles of the x86 kernels: one group of eight rows against `T` activation rows
//! (tokens) at once.
//!
//! The one-token kernels spend, per 32-byte load of codes, a load, the nibble (or 6-bit)
//! unpacking and the dot-product instructions; with `T` tokens the load and the unpacking are
//! shared, so per token only the dot products (activations broadcast from each token's
//! block), the scale multiplications and the float step remain. Each token keeps its own
//! accumulators (i32 per sub-block, i32 per block, f32 across blocks), and performs exactly
//! the one-token kernel's integer sums and float step in block order, so every output is still
//! `vec_dot`'s bit for bit. Under the AVX-512 features the compiler has 32 ymm registers (a
//! tile of four tokens holds 20 for Q4_K); the AVX2 tiles live in 16 and spill the f32
//! accumulators, touched once per block.

use super::super::{q6, CODES, RECORD, ROWS};
use super::{bcast4, codes_q6k, float_step, load32, mins, q6k_finish, scales};
use crate::quant::BlockQ8K;
use std::arch::x86_64::*;

/// Token `t`'s block `j` (`a[t]` holds the caller's checked `nb` blocks).
#[inline(always)]
unsafe fn blocks<'a, const T: usize>(a: &[&'a [BlockQ8K]; T], j: usize) -> [&'a BlockQ8K; T] {
    // SAFETY: the callers pass `j < nb` and every `a[t]` holds `nb` blocks.
    std::array::from_fn(|t| unsafe { a[t].get_unchecked(j) })
}

/// Stores the tile's accumulators.
#[inline(always)]
unsafe fn store<const T: usize>(acc: [__m256; T], out: &mut [[f32; ROWS]; T]) {
    for (o, acc) in out.iter_mut().zip(acc) {
        // SAFETY: `o` is 8 f32; AVX is enabled in every caller.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    }
}

/// The Q4_K tile; `$dot(sum, codes, acts)` adds one 32-byte load's products to a token's
/// sub-block sum, `$scale(sum, s)` returns it times sub-block `s`'s row scales as i32,
/// `$summ(sum, m, p)` adds the i16 pair products of offsets `m` and sums `p` to `sum`.
macro_rules! q4k_tile {
    ($recs:expr, $a:expr, $p:expr, $out:expr, $zero:expr, $dot:expr, $scale:expr, $summ:expr) => {{
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_ps(); T];
        for j in 0..$recs.len() / RECORD {
            // SAFETY: record `j` is inside `recs` and block `j` inside each `a[t]` (the
            // caller's contract); every offset is inside the record and `qs` (256 bytes).
            unsafe {
                let rec = $recs.as_ptr().add(j * RECORD);
                let ab = blocks($a, j);
                let mut isum = [_mm256_setzero_si256(); T];
                for c in 0..4 {
                    let (mut lo, mut hi) = ([$zero; T], [$zero; T]);
                    for q in 0..8 {
                        let x = load32(rec.add(CODES + 256 * c + 32 * q));
                        let xl = _mm256_and_si256(x, m4);
                        let xh = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
                        for t in 0..T {
                            let p = ab[t].qs.as_ptr().add(64 * c + 4 * q);
                            lo[t] = $dot(lo[t], xl, bcast4(p));
                            hi[t] = $dot(hi[t], xh, bcast4(p.add(32)));
                        }
                    }
                    let (sl, sh) = ($scale(rec, 2 * c), $scale(rec, 2 * c + 1));
                    for t in 0..T {
                        isum[t] = _mm256_add_epi32(isum[t], sl(lo[t]));
                        isum[t] = _mm256_add_epi32(isum[t], sh(hi[t]));
                    }
                }
                // The offsets term `Σ_s m_s·P_s` from the caller's pair sums `P_s` (`pairs`).
                let m: [__m256i; 4] = std::array::from_fn(|k| mins(rec, k));
                for t in 0..T {
                    let p = $p[t].get_unchecked(j).as_ptr().cast::<i8>();
                    let mut summs = _mm256_setzero_si256();
                    for (k, &m) in m.iter().enumerate() {
                        summs = $summ(summs, m, bcast4(p.add(4 * k)));
                    }
                    acc[t] = float_step(rec, ab[t].d(), isum[t], summs, acc[t]);
                }
            }
        }
        // SAFETY: AVX is enabled in every caller.
        unsafe { store(acc, $out) };
    }};
}

/// Q4_K, AVX2 (`pmaddubsw`; i16 sub-block sums as in [`super::avx2`]).
///
/// # Safety
/// As [`super::avx2`]; every `a[t]` and `pairs[t]` holds `recs.len() / RECORD` blocks, each
/// `pairs[t][j]` the sums `bsum_2s + bsum_2s+1` of `a[t][j]` ([`super::super::pair_sums`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in super::super) unsafe fn avx2<const T: usize>(
    recs: &[u8],
    a: &[&[BlockQ8K]; T],
    pairs: &[&[[i16; 8]]; T],
    out: &mut [[f32; ROWS]; T],
) {
    q4k_tile!(
        recs,
        a,
        pairs,
        out,
        _mm256_setzero_si256(),
        |s: __m256i, x: __m256i, a: __m256i| _mm256_add_epi16(s, _mm256_maddubs_epi16(x, a)),
        |rec: *const u8, s: usize| {
            // The scale in both i16 halves of lane r: pmaddwd adds the pair and scales.
            let sc = scales(rec, s);
            let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
            move |sum: __m256i| _mm256_madd_epi16(sum, sc)
        },
        |s: __m256i, m: __m256i, p: __m256i| _mm256_add_epi32(s, _mm256_madd_epi16(m, p))
    )
}

/// Q4_K, AVX-512 VNNI (`vpdpbusd`, as [`super::vnni`]).
///
/// # Safety
/// As [`super::vnni`]; `a` and `pairs` as for [`avx2`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(in super::super) unsafe fn vnni<const T: usize>(
    recs: &[u8],
    a: &[&[BlockQ8K]; T],
    pairs: &[&[[i16; 8]]; T],
    out: &mut [[f32; ROWS]; T],
) {
    q4k_tile!(
        recs,
        a,
        pairs,
        out,
        _mm256_setzero_si256(),
        |s: __m256i, x: __m256i, a: __m256i| _mm256_dpbusd_epi32(s, x, a),
        |rec: *const u8, s: usize| {
            let sc = scales(rec, s);
            move |sum: __m256i| _mm256_mullo_epi32(sum, sc)
        },
        |s: __m256i, m: __m256i, p: __m256i| _mm256_dpwssd_epi32(s, m, p)
    )
}

/// Q6_K sub-block `s`'s eight row scales as i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn scales_q6k(rec: *const u8, s: usize) -> __m256i {
    // SAFETY: 8 bytes inside the record.
    unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(rec.add(q6::SCALES + 8 * s).cast())) }
}

/// Q6_K scales of sub-blocks `2k` and `2k + 1` as an i16 pair in each row's i32 lane.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn scale_pairs_q6k(rec: *const u8, k: usize) -> __m256i {
    // SAFETY: 16 bytes inside the record.
    let (s0, s1) = unsafe {
        let p = rec.add(q6::SCALES + 16 * k);
        (_mm_loadl_epi64(p.cast()), _mm_loadl_epi64(p.add(8).cast()))
    };
    _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s0, s1))
}

/// The Q6_K tile; `$dot(sum, codes, acts)` adds one vector of codes' products (i32 lanes) to
/// a token's sub-block sum.
macro_rules! q6k_tile {
    ($recs:expr, $a:expr, $out:expr, $dot:expr) => {{
        let mut acc = [_mm256_setzero_ps(); T];
        for j in 0..$recs.len() / q6::RECORD {
            // SAFETY: as in `q4k_tile`.
            unsafe {
                let rec = $recs.as_ptr().add(j * q6::RECORD);
                let ab = blocks($a, j);
                let mut isum = [_mm256_setzero_si256(); T];
                for h in 0..2 {
                    for half in 0..2 {
                        // Sub-blocks 8h + 2t + half, t = 0..4 (as the one-token kernels).
                        let mut dots = [[_mm256_setzero_si256(); 4]; T];
                        for q in 4 * half..4 * half + 4 {
                            let u = codes_q6k(rec, h, q);
                            for tok in 0..T {
                                let p = ab[tok].qs.as_ptr().add(128 * h + 4 * q);
                                for (t, d) in dots[tok].iter_mut().enumerate() {
                                    *d = $dot(*d, u[t], bcast4(p.add(32 * t)));
                                }
                            }
                        }
                        for t in 0..4 {
                            let sc = scales_q6k(rec, 8 * h + 2 * t + half);
                            for tok in 0..T {
                                let p = _mm256_mullo_epi32(dots[tok][t], sc);
                                isum[tok] = _mm256_add_epi32(isum[tok], p);
                            }
                        }
                    }
                }
                // Less 32·Σ_s sc_s·bsum_s (the codes' offset), by scale pairs with pmaddwd:
                // lane r holds (sc_2k, sc_2k+1) of row r as i16, against (bsum_2k, bsum_2k+1).
                let mut off = [_mm256_setzero_si256(); T];
                for k in 0..8 {
                    let sp = scale_pairs_q6k(rec, k);
                    for tok in 0..T {
                        let b = bcast4(ab[tok].bsums.as_ptr().add(2 * k).cast());
                        off[tok] = _mm256_add_epi32(off[tok], _mm256_madd_epi16(sp, b));
                    }
                }
                for t in 0..T {
                    let isum = _mm256_sub_epi32(isum[t], _mm256_slli_epi32::<5>(off[t]));
                    acc[t] = q6k_finish(rec, ab[t], isum, acc[t]);
                }
            }
        }
        // SAFETY: AVX is enabled in every caller.
        unsafe { store(acc, $out) };
    }};
}

/// Q6_K, AVX2 (`pmaddubsw` widened by `pmaddwd` with ones, as [`super::avx2_q6k`]).
///
/// # Safety
/// As [`super::avx2`]; every `a[t]` holds `recs.len() / q6::RECORD` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(in super::super) unsafe fn avx2_q6k<const T: usize>(
    recs: &[u8],
    a: &[&[BlockQ8K]; T],
    out: &mut [[f32; ROWS]; T],
) {
    let ones = _mm256_set1_epi16(1);
    q6k_tile!(recs, a, out, |d: __m256i, u: __m256i, a: __m256i| {
        _mm256_add_epi32(d, _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), ones))
    })
}

/// Q6_K, AVX-512 VNNI.
///
/// # Safety
/// As [`super::vnni`]; every `a[t]` holds `recs.len() / q6::RECORD` blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(in super::super) unsafe fn vnni_q6k<const T: usize>(
    recs: &[u8],
    a: &[&[BlockQ8K]; T],
    out: &mut [[f32; ROWS]; T],
) {
    q6k_tile!(recs, a, out, |d: __m256i, u: __m256i, a: __m256i| {
        _mm256_dpbusd_epi32(d, u, a)
    })
}

/// Q4_K, AVX-512 without VNNI: the AVX2 tile compiled with AVX-512VL's 32 registers.
///
/// # Safety
/// As [`avx2`], plus AVX-512 F/BW/VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(in super::super) unsafe fn avx512<const T: usize>(
    recs: &[u8],
    a: &[&[BlockQ8K]; T],
    pairs: &[&[[i16; 8]]; T],
    out: &mut [[f32; ROWS]; T],
) {
    q4k_tile!(
        recs,
        a,
        pairs,
        out,
        _mm256_setzero_si256(),
        |s: __m256i, x: __m256i, a: __m256i| _mm256_add_epi16(s, _mm256_maddubs_epi16(x, a)),
        |rec: *const u8, s: usize| {
            let sc = scales(rec, s);
            let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
            move |sum: __m256i| _mm256_madd_epi16(sum, sc)
        },
        |s: __m256i, m: __m256i, p: __m256i| _mm256_add_epi32(s, _mm256_madd_epi16(m, p))
    )
}

/// Q6_K, AVX-512 without VNNI (as [`avx512`]).
///
/// # Safety
/// As [`avx512`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(in super::super) unsafe fn avx512_q6k<const T: usize>(
    recs: &[u8],
    a: &[&[BlockQ8K]; T],
    out: &mut [[f32; ROWS]; T],
) {
    let ones = _mm256_set1_epi16(1);
    q6k_tile!(recs, a, out, |d: __m256i, u: __m256i, a: __m256i| {
        _mm256_add_epi32(d, _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), ones))
    })
}
