//! x86-64 paths: AVX2 (`pmaddubsw` + `pmaddwd`), AVX-512 BW (the same on 512 bits) and
//! AVX-512 VNNI (`vpdpbusd`, then the sub-block scales with `vpmulld`).
//!
//! All three share the AVX2 decoders, which turn one super-block's packed codes into eight
//! 32-byte vectors of unsigned codes in weight order (vector `k` = weights `32k..32k+32`);
//! the ISA-specific part is only the scaled integer dot product of those codes with the Q8_K
//! codes. Loads are unaligned (`loadu`): blocks come from memory-mapped files at any address.

use super::{finish, finish_min, k4_unpack, q3k_unpack};
use crate::quant::act::BlockQ8K;
use crate::quant::iquants::KVALUES_IQ4NL;
use crate::quant::{BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use std::arch::x86_64::*;

/// One super-block's codes: vector `k` holds weights `32k..32k+32`.
pub(super) type Codes = [__m256i; 8];

/// An f16 to f32 with F16C (exact, as the scalar path's software conversion).
#[target_feature(enable = "f16c")]
#[inline]
pub(super) unsafe fn f16(b: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(b) as i32),
    ))
}

/// Loads 32 bytes from `p` (any alignment).
///
/// # Safety
/// `p..p+32` must be readable; AVX2 must be available.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// Q2_K: weight `128h + 32j + l` is bits `2j..2j+2` of `qs[32h + l]`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn codes_q2k(w: &BlockQ2K) -> Codes {
    let m3 = _mm256_set1_epi8(3);
    let mut out = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        // SAFETY: `qs` is 64 bytes; this reads bytes 32h..32h+32.
        let x = unsafe { load32(w.qs.as_ptr().add(32 * h)) };
        // 16-bit shifts move bits across byte boundaries; the mask keeps only each byte's own.
        out[4 * h] = _mm256_and_si256(x, m3);
        out[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16::<2>(x), m3);
        out[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m3);
        out[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16::<6>(x), m3);
    }
    out
}

/// Q3_K as unsigned `u = q + 4`: the 2 low bits as Q2_K, plus 4 where the hmask bit
/// (`4h + j` of `hmask[l]`) is set.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn codes_q3k(w: &BlockQ3K) -> Codes {
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    // SAFETY: `hmask` is 32 bytes.
    let hm = unsafe { load32(w.hmask.as_ptr()) };
    let mut out = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        // SAFETY: `qs` is 64 bytes; this reads bytes 32h..32h+32.
        let x = unsafe { load32(w.qs.as_ptr().add(32 * h)) };
        let low = [
            _mm256_and_si256(x, m3),
            _mm256_and_si256(_mm256_srli_epi16::<2>(x), m3),
            _mm256_and_si256(_mm256_srli_epi16::<4>(x), m3),
            _mm256_and_si256(_mm256_srli_epi16::<6>(x), m3),
        ];
        for (j, low) in low.into_iter().enumerate() {
            let bit = _mm256_set1_epi8((1u8 << (4 * h + j)) as i8);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
            out[4 * h + j] = _mm256_or_si256(low, _mm256_and_si256(set, four));
        }
    }
    out
}

/// Q4_K/Q5_K: weight `64c + l` is the low nibble of `qs[32c + l]`, `64c + 32 + l` the high
/// one; with `qh`, bit `2c` (resp. `2c + 1`) of `qh[l]` adds 16.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn codes_k4(qs: &[u8; 128], qh: Option<&[u8; 32]>) -> Codes {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut out = [_mm256_setzero_si256(); 8];
    for c in 0..4 {
        // SAFETY: `qs` is 128 bytes; this reads bytes 32c..32c+32.
        let x = unsafe { load32(qs.as_ptr().add(32 * c)) };
        out[2 * c] = _mm256_and_si256(x, m4);
        out[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
    }
    if let Some(qh) = qh {
        // SAFETY: `qh` is 32 bytes.
        let hb = unsafe { load32(qh.as_ptr()) };
        let sixteen = _mm256_set1_epi8(16);
        for (k, o) in out.iter_mut().enumerate() {
            let bit = _mm256_set1_epi8((1u8 << k) as i8);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
            *o = _mm256_or_si256(*o, _mm256_and_si256(set, sixteen));
        }
    }
    out
}

/// Q6_K as unsigned `u = q + 32` (the stored form). Half `h`, quarter `t`: low nibble `t / 2`
/// of `ql[64h + 32(t % 2) + l]`, high bits `2t..2t+2` of `qh[32h + l]` as bits 4..6.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn codes_q6k(w: &BlockQ6K) -> Codes {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut out = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        // SAFETY: `ql` is 128 and `qh` 64 bytes; these read ql[64h..64h+64], qh[32h..32h+32].
        let (l0, l1, hb) = unsafe {
            (
                load32(w.ql.as_ptr().add(64 * h)),
                load32(w.ql.as_ptr().add(64 * h + 32)),
                load32(w.qh.as_ptr().add(32 * h)),
            )
        };
        // Masking before each 16-bit shift keeps bits inside their byte.
        let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hb, _mm256_set1_epi8(0x03)));
        let h1 = _mm256_slli_epi16::<2>(_mm256_and_si256(hb, _mm256_set1_epi8(0x0c)));
        let h2 = _mm256_and_si256(hb, _mm256_set1_epi8(0x30));
        let h3 = _mm256_srli_epi16::<2>(_mm256_and_si256(hb, _mm256_set1_epi8(0xc0u8 as i8)));
        out[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, m4), h0);
        out[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), h1);
        out[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4), h2);
        out[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4), h3);
    }
    out
}

/// IQ4_XS: signed code-book values (`pshufb` table lookup). Sub-block `s`: byte `j` of
/// `qs[16s..]` holds weight `j` (low nibble) and `j + 16` (high nibble).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn codes_iq4xs(w: &BlockIQ4XS, table: &[u8; 16]) -> Codes {
    // SAFETY: the table is 16 bytes.
    let table = unsafe { _mm_loadu_si128(table.as_ptr().cast()) };
    let table = _mm256_broadcastsi128_si256(table);
    let m4 = _mm_set1_epi8(0x0f);
    let mut out = [_mm256_setzero_si256(); 8];
    for (s, o) in out.iter_mut().enumerate() {
        // SAFETY: `qs` is 128 bytes; this reads bytes 16s..16s+16.
        let x = unsafe { _mm_loadu_si128(w.qs.as_ptr().add(16 * s).cast()) };
        let lo = _mm_and_si128(x, m4);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), m4);
        *o = _mm256_shuffle_epi8(table, _mm256_set_m128i(hi, lo));
    }
    out
}

/// IQ4_XS's code book as signed bytes (for `|k|·(a·sign k)`), and shifted by +128 to unsigned
/// bytes (for `vpdpbusd`, which takes u8 × i8 without saturating; the `128·Σa` this adds is
/// taken back out through the bsums).
const IQ4_SIGNED: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = KVALUES_IQ4NL[i] as u8;
        i += 1;
    }
    t
};
const IQ4_UNSIGNED: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES_IQ4NL[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// The sums of the eight i32 lanes of `x` and of `y`, reduced together.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn hsum_pair(x: __m256i, y: __m256i) -> (i32, i32) {
    let h = _mm256_hadd_epi32(x, y); // x01 x23 y01 y23 | x45 x67 y45 y67
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let s = _mm_hadd_epi32(s, s); // x y x y
    (_mm_cvtsi128_si32(s), _mm_extract_epi32::<1>(s))
}

/// Q8_K's 16 block sums as i16 lanes.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn bsums(a: &BlockQ8K) -> __m256i {
    // SAFETY: `bsums` is 32 bytes.
    unsafe { load32(a.bsums.as_ptr().cast()) }
}

/// 16 bytes of `p` widened to i16 lanes, signed or unsigned.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn widen16(p: &[u8; 16], signed: bool) -> __m256i {
    // SAFETY: 16 bytes.
    let v = unsafe { _mm_loadu_si128(p.as_ptr().cast()) };
    if signed {
        _mm256_cvtepi8_epi16(v)
    } else {
        _mm256_cvtepu8_epi16(v)
    }
}

/// The integer dot products per ISA: `Σ_s sc_s · Σ_{i∈s} u_i·a_i` over one super-block, for
/// sub-blocks of 16 (`*_16`) or 32 (`*_32`; `signed` for IQ4_XS's code-book values) weights,
/// returned as eight i32 lanes whose sum it is (reduced by the caller with its other sums).
/// No intermediate overflows: `pmaddubsw` pairs are at most `2·63·128` (k-quants) or
/// `2·127·127` (IQ4_XS) < 2^15, and a block's scaled sums stay below 2^28.
pub(super) mod isum {
    use super::*;

    /// `pshufb` patterns for sub-blocks of 16: vector `k` takes scale `2k` in its low 128-bit
    /// half and `2k + 1` in its high half, from a register holding 8 scales in both halves.
    pub(in crate::quant::dot::kquants) const PAIR_K: [[u8; 32]; 4] = {
        let mut m = [[0u8; 32]; 4];
        let mut k = 0;
        while k < 4 {
            let mut i = 0;
            while i < 32 {
                let word = 2 * k + i / 16;
                m[k][i] = (2 * word + i % 2) as u8;
                i += 1;
            }
            k += 1;
        }
        m
    };

    /// `sc`: the 16 scales as i16 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn avx2_16(u: &Codes, a: &[i8; QK_K], sc: __m256i) -> __m256i {
        // Scales 0..8 (resp. 8..16) in both halves, so that one in-lane `pshufb` per vector
        // picks its two.
        let halves = [
            _mm256_permute4x64_epi64::<0b01_00_01_00>(sc),
            _mm256_permute4x64_epi64::<0b11_10_11_10>(sc),
        ];
        let mut acc = _mm256_setzero_si256();
        for (k, &u) in u.iter().enumerate() {
            // SAFETY: `a` is 256 bytes; this reads bytes 32k..32k+32.
            let a = unsafe { load32(a.as_ptr().add(32 * k).cast()) };
            let p = _mm256_maddubs_epi16(u, a);
            // SAFETY: a 32-byte constant.
            let s = _mm256_shuffle_epi8(halves[k / 4], unsafe { load32(PAIR_K[k % 4].as_ptr()) });
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
        }
        acc
    }

    /// `pshufb` patterns broadcasting i16 `k` (of 8) to every lane.
    pub(in crate::quant::dot::kquants) const WORD_K: [[u8; 32]; 8] = {
        let mut m = [[0u8; 32]; 8];
        let mut k = 0;
        while k < 8 {
            let mut i = 0;
            while i < 32 {
                m[k][i] = (2 * k + i % 2) as u8;
                i += 1;
            }
            k += 1;
        }
        m
    };

    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn avx2_32(
        u: &Codes,
        a: &[i8; QK_K],
        sc: &[i16; 8],
        signed: bool,
    ) -> __m256i {
        // The 8 scales in both 128-bit halves; `pshufb` then picks scale k for vector k.
        // SAFETY: `sc` is 16 bytes.
        let scales = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
        let mut acc = _mm256_setzero_si256();
        for (k, &u) in u.iter().enumerate() {
            // SAFETY: `a` is 256 bytes; this reads bytes 32k..32k+32.
            let a = unsafe { load32(a.as_ptr().add(32 * k).cast()) };
            // Signed codes: |u|·(a·sign u), exact as a ≠ −128 (module docs).
            let (u, a) = if signed {
                (_mm256_sign_epi8(u, u), _mm256_sign_epi8(a, u))
            } else {
                (u, a)
            };
            let p = _mm256_maddubs_epi16(u, a);
            // SAFETY: a 32-byte constant.
            let s = _mm256_shuffle_epi8(scales, unsafe { load32(WORD_K[k].as_ptr()) });
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
        }
        acc
    }

    /// `vpermw` indices: lanes 0, 1 of vector `k` take scale `2k`, lanes 2, 3 scale `2k + 1`
    /// (sub-blocks of 32).
    const HALF_K: [[u16; 32]; 4] = {
        let mut m = [[0u16; 32]; 4];
        let mut k = 0;
        while k < 4 {
            let mut i = 0;
            while i < 32 {
                m[k][i] = (2 * k + i / 16) as u16;
                i += 1;
            }
            k += 1;
        }
        m
    };

    /// Codes `2k, 2k + 1` as one 64-byte vector.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pair(u: &Codes, k: usize) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(u[2 * k]), u[2 * k + 1])
    }

    /// Adds the upper 8 lanes onto the lower 8 (the sum of all lanes is kept).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn fold512(v: __m512i) -> __m256i {
        _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
    }

    /// `vpermw` indices: 128-bit lane `L` of vector `k` takes scale `4k + L` (sub-blocks of 16).
    pub(in crate::quant::dot::kquants) const QUAD_K: [[u16; 32]; 4] = {
        let mut m = [[0u16; 32]; 4];
        let mut k = 0;
        while k < 4 {
            let mut i = 0;
            while i < 32 {
                m[k][i] = (4 * k + i / 8) as u16;
                i += 1;
            }
            k += 1;
        }
        m
    };

    /// `sc`: the 16 scales as i16 lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) unsafe fn avx512_16(u: &Codes, a: &[i8; QK_K], sc: __m256i) -> __m256i {
        let sc = _mm512_castsi256_si512(sc);
        let mut acc = _mm512_setzero_si512();
        for (k, idx) in QUAD_K.iter().enumerate() {
            // SAFETY: `a` is 256 bytes; this reads bytes 64k..64k+64; the index table is 64
            // bytes. AVX-512F is enabled.
            let (u, a, idx) = unsafe {
                (
                    pair(u, k),
                    _mm512_loadu_si512(a.as_ptr().add(64 * k).cast()),
                    _mm512_loadu_si512(idx.as_ptr().cast()),
                )
            };
            let p = _mm512_maddubs_epi16(u, a);
            let s = _mm512_permutexvar_epi16(idx, sc);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, s));
        }
        // SAFETY: AVX-512F is enabled here.
        unsafe { fold512(acc) }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) unsafe fn avx512_32(
        u: &Codes,
        a: &[i8; QK_K],
        sc: &[i16; 8],
        signed: bool,
    ) -> __m256i {
        // SAFETY: `sc` is 16 bytes.
        let scales = _mm512_castsi128_si512(unsafe { _mm_loadu_si128(sc.as_ptr().cast()) });
        let mut acc = _mm512_setzero_si512();
        for (k, idx) in HALF_K.iter().enumerate() {
            // SAFETY: `a` is 256 bytes; this reads bytes 64k..64k+64. AVX-512F is enabled.
            let (u, a) = unsafe {
                (
                    pair(u, k),
                    _mm512_loadu_si512(a.as_ptr().add(64 * k).cast()),
                )
            };
            // Signed codes: |u|·(a·sign u); AVX-512 has no `vpsignb`, so negate under a mask.
            let (u, a) = if signed {
                let neg = _mm512_movepi8_mask(u);
                (
                    _mm512_abs_epi8(u),
                    _mm512_mask_sub_epi8(a, neg, _mm512_setzero_si512(), a),
                )
            } else {
                (u, a)
            };
            let p = _mm512_maddubs_epi16(u, a);
            // SAFETY: a 64-byte constant.
            let idx = unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) };
            let s = _mm512_permutexvar_epi16(idx, scales);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, s));
        }
        // SAFETY: AVX-512F is enabled here.
        unsafe { fold512(acc) }
    }

    /// VNNI: `vpdpbusd` sums 4 products per i32 lane (lane `4L..4L+4` = 16 weights), then each
    /// lane is multiplied by its sub-block's scale (`idx` picks it from the 16 or 8 scales).
    /// Codes are unsigned (IQ4_XS comes as `k + 128`, see [`IQ4_UNSIGNED`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn vnni(u: &Codes, a: &[i8; QK_K], scales: __m512i, sub: usize) -> __m256i {
        let mut acc = _mm512_setzero_si512();
        let lane = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        // Sub-blocks of 32: two per 64 bytes, lanes 0..8 and 8..16.
        let lane = if sub == 16 {
            lane
        } else {
            _mm512_srli_epi32::<1>(lane)
        };
        let per_vec = (64 / sub) as i32;
        for k in 0..4 {
            // SAFETY: `a` is 256 bytes; this reads bytes 64k..64k+64. AVX-512F is enabled.
            let (u, a) = unsafe {
                (
                    pair(u, k),
                    _mm512_loadu_si512(a.as_ptr().add(64 * k).cast()),
                )
            };
            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, a);
            let idx = _mm512_add_epi32(lane, _mm512_set1_epi32(per_vec * k as i32));
            let s = _mm512_permutexvar_epi32(idx, scales);
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(p, s));
        }
        // SAFETY: AVX-512F is enabled here.
        unsafe { fold512(acc) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    pub(super) unsafe fn vnni_16(u: &Codes, a: &[i8; QK_K], sc: __m256i) -> __m256i {
        let s = _mm512_cvtepi16_epi32(sc);
        // SAFETY: the features `vnni` needs are enabled here.
        unsafe { vnni(u, a, s, 16) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    pub(super) unsafe fn vnni_32(
        u: &Codes,
        a: &[i8; QK_K],
        sc: &[i16; 8],
        signed: bool,
    ) -> __m256i {
        // The VNNI rows pass IQ4_XS as unsigned `k + 128` (`vpdpbusd` has no signed × signed).
        debug_assert!(!signed, "vpdpbusd takes unsigned codes");
        // SAFETY: `sc` is 16 bytes.
        let s = _mm512_cvtepi16_epi32(_mm256_zextsi128_si256(unsafe {
            _mm_loadu_si128(sc.as_ptr().cast())
        }));
        // SAFETY: the features `vnni` needs are enabled here.
        unsafe { vnni(u, a, s, 32) }
    }
}

/// Eight blocks' lane vectors reduced at once: lane `j` of the result is the sum of the eight
/// lanes of `v[j]` (three rounds of `phaddd` instead of eight separate reductions).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn transpose_sum8(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // Per 128-bit half: the half-sums of v0..v3 (resp. v4..v7).
    let lo = _mm256_hadd_epi32(h01, h23);
    let hi = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// The block loop shared by every type and ISA. `$body` yields one block's integer lanes
/// `(isum, summs)` (each the sum of its eight i32 lanes) and its f16 super-scales as f32
/// `(d, dmin)`. Eight blocks at a time, the integers are reduced together and the float step
/// `(d_a·d)·isum − (d_a·dmin)·summs` runs on eight lanes (IEEE multiplies and subtractions
/// round per lane exactly as the scalar ones; no fused multiply-add), then the eight block
/// values are added to the running sum in block order: the scalar reference's result, bit for
/// bit. `$mins` is false for the types without offsets, whose step is `(d_a·d)·isum` alone.
macro_rules! block_loop {
    ($w:expr, $a:expr, $mins:literal, |$wb:ident, $ab:ident| $body:expr) => {{
        let (w, a) = ($w, $a);
        let n = w.len().min(a.len());
        let mut acc = 0.0f32;
        let mut i = 0;
        while i + 8 <= n {
            let mut isums = [_mm256_setzero_si256(); 8];
            let mut summs = [_mm256_setzero_si256(); 8];
            let (mut dall, mut dm) = ([0.0f32; 8], [0.0f32; 8]);
            for j in 0..8 {
                let ($wb, $ab) = (&w[i + j], &a[i + j]);
                let (x, m, d, dmin): (__m256i, __m256i, f32, f32) = $body;
                isums[j] = x;
                summs[j] = m;
                dall[j] = $ab.d() * d;
                dm[j] = $ab.d() * dmin;
            }
            // SAFETY: the arrays are 32 bytes each.
            let t = unsafe {
                let x = _mm256_cvtepi32_ps(transpose_sum8(&isums));
                let t = _mm256_mul_ps(_mm256_loadu_ps(dall.as_ptr()), x);
                if $mins {
                    let m = _mm256_cvtepi32_ps(transpose_sum8(&summs));
                    _mm256_sub_ps(t, _mm256_mul_ps(_mm256_loadu_ps(dm.as_ptr()), m))
                } else {
                    t
                }
            };
            let mut vals = [0.0f32; 8];
            // SAFETY: `vals` is 32 bytes.
            unsafe { _mm256_storeu_ps(vals.as_mut_ptr(), t) };
            for v in vals {
                acc += v;
            }
            i += 8;
        }
        for j in i..n {
            let ($wb, $ab) = (&w[j], &a[j]);
            let (x, m, d, dmin): (__m256i, __m256i, f32, f32) = $body;
            let (isum, summs) = hsum_pair(x, m);
            acc = if $mins {
                finish_min(acc, $ab, d, dmin, isum, summs)
            } else {
                finish(acc, $ab, d, isum)
            };
        }
        acc
    }};
}

/// The row functions of one ISA: decode, integer dot, the shared float step.
///
/// Scales are unpacked with ggml's 32-bit mask shuffles ([`k4_unpack`], [`q3k_unpack`]); the
/// offsets' integer terms (`Σ m·bsum`, `off·Σ sc·bsum`) are one `pmaddwd` of the 16 bsums
/// each, reduced together with the main sum.
macro_rules! rows {
    ($isa:ident, $features:literal, $isum16:path, $isum32:path, $iq4_unsigned:literal) => {
        pub(super) mod $isa {
            use super::*;

            /// # Safety
            /// The CPU must have the features this function enables.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
                // SAFETY (the body): this function's features include the callees'.
                block_loop!(w, a, true, |w, a| unsafe {
                    // Low nibbles are the scales, high nibbles the offsets.
                    let sc = widen16(&w.scales, false);
                    let m = _mm256_srli_epi16::<4>(sc);
                    let sc = _mm256_and_si256(sc, _mm256_set1_epi16(0x0f));
                    let isum = $isum16(&codes_q2k(w), &a.qs, sc);
                    (isum, _mm256_madd_epi16(bsums(a), m), f16(w.d), f16(w.dmin))
                })
            }

            /// # Safety
            /// As [`q2_k`].
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
                // SAFETY (the body): as in `q2_k`.
                block_loop!(w, a, false, |w, a| unsafe {
                    // Re-centre (− 32) as bytes, then widen.
                    let v = _mm_loadu_si128(q3k_unpack(&w.scales).as_ptr().cast());
                    let sc = _mm256_cvtepi8_epi16(_mm_sub_epi8(v, _mm_set1_epi8(32)));
                    let isum = $isum16(&codes_q3k(w), &a.qs, sc);
                    // u = q + 4: take 4·Σ_s sc_s·bsum_s back out.
                    let off = _mm256_slli_epi32::<2>(_mm256_madd_epi16(bsums(a), sc));
                    (
                        _mm256_sub_epi32(isum, off),
                        _mm256_setzero_si256(),
                        f16(w.d),
                        0.0,
                    )
                })
            }

            /// # Safety
            /// As [`q2_k`].
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
                // SAFETY (the body): as in `q2_k`.
                block_loop!(w, a, true, |w, a| unsafe {
                    let (sc, m) = k4_vectors(&w.scales);
                    let isum = $isum32(&codes_k4(&w.qs, None), &a.qs, &sc, false);
                    (isum, _mm256_madd_epi16(bsums(a), m), f16(w.d), f16(w.dmin))
                })
            }

            /// # Safety
            /// As [`q2_k`].
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
                // SAFETY (the body): as in `q2_k`.
                block_loop!(w, a, true, |w, a| unsafe {
                    let (sc, m) = k4_vectors(&w.scales);
                    let isum = $isum32(&codes_k4(&w.qs, Some(&w.qh)), &a.qs, &sc, false);
                    (isum, _mm256_madd_epi16(bsums(a), m), f16(w.d), f16(w.dmin))
                })
            }

            /// # Safety
            /// As [`q2_k`].
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
                // SAFETY (the body): as in `q2_k`.
                block_loop!(w, a, false, |w, a| unsafe {
                    let sc = widen16(&w.scales.map(|s| s as u8), true);
                    let isum = $isum16(&codes_q6k(w), &a.qs, sc);
                    // u = q + 32: take 32·Σ_s sc_s·bsum_s back out.
                    let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums(a), sc));
                    (
                        _mm256_sub_epi32(isum, off),
                        _mm256_setzero_si256(),
                        f16(w.d),
                        0.0,
                    )
                })
            }

            /// # Safety
            /// As [`q2_k`].
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
                // SAFETY (the body): as in `q2_k`.
                block_loop!(w, a, false, |w, a| unsafe {
                    let sc = iq4xs_vector(w);
                    let isum = if $iq4_unsigned {
                        // u = k + 128: take 128·Σ_s sc_s·(bsum_2s + bsum_2s+1) back out.
                        let isum = $isum32(&codes_iq4xs(w, &IQ4_UNSIGNED), &a.qs, &sc, false);
                        let v = _mm_loadu_si128(sc.as_ptr().cast());
                        let dup =
                            _mm256_set_m128i(_mm_unpackhi_epi16(v, v), _mm_unpacklo_epi16(v, v));
                        let off = _mm256_slli_epi32::<7>(_mm256_madd_epi16(bsums(a), dup));
                        _mm256_sub_epi32(isum, off)
                    } else {
                        $isum32(&codes_iq4xs(w, &IQ4_SIGNED), &a.qs, &sc, true)
                    };
                    (isum, _mm256_setzero_si256(), f16(w.d), 0.0)
                })
            }
        }
    };
}

/// Q4_K/Q5_K: the 8 scales (i16), and the 8 offsets widened to the 16 bsum lanes (offset `s`
/// in lanes `2s`, `2s + 1`: each 32-weight sub-block covers two 16-value bsums).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn k4_vectors(scales: &[u8; 12]) -> ([i16; 8], __m256i) {
    let u = k4_unpack(scales);
    // SAFETY: `u` is 16 bytes.
    let v = unsafe { _mm_loadu_si128(u.as_ptr().cast()) };
    let mut sc = [0i16; 8];
    // SAFETY: `sc` is 16 bytes.
    unsafe { _mm_storeu_si128(sc.as_mut_ptr().cast(), _mm_cvtepu8_epi16(v)) };
    let dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    (sc, _mm256_cvtepu8_epi16(_mm_shuffle_epi8(v, dup)))
}

/// IQ4_XS's 8 scales `ls − 32`: nibbles of `scales_l` interleaved low/high, plus bits
/// `2s..2s+2` of `scales_h` (one variable shift per i32 lane) as bits 4..6.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn iq4xs_vector(w: &BlockIQ4XS) -> [i16; 8] {
    let l = _mm_cvtsi32_si128(i32::from_le_bytes(w.scales_l));
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_unpacklo_epi8(
        _mm_and_si128(l, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(l), m4),
    );
    let h = _mm256_set1_epi32(u16::from_le_bytes(w.scales_h) as i32);
    let h = _mm256_srlv_epi32(h, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
    let h = _mm256_slli_epi32::<4>(_mm256_and_si256(h, _mm256_set1_epi32(3)));
    let ls = _mm256_sub_epi32(
        _mm256_or_si256(_mm256_cvtepu8_epi32(lo), h),
        _mm256_set1_epi32(32),
    );
    // i32 → i16 (values fit): pack, then gather the two 64-bit halves.
    let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi32(ls, ls));
    let mut out = [0i16; 8];
    // SAFETY: `out` is 16 bytes.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm256_castsi256_si128(packed)) };
    out
}

rows!(avx2, "avx2,fma,f16c", isum::avx2_16, isum::avx2_32, false);
rows!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    isum::avx512_16,
    isum::avx512_32,
    false
);
rows!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    isum::vnni_16,
    isum::vnni_32,
    true
);
