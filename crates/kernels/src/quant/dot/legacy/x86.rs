//! x86-64 paths: AVX2 (+FMA, F16C), AVX-512 BW/VL, AVX-512 VNNI.
//!
//! Each block's 32 codes are decoded to 32 i8 in a 256-bit register ([`codes`]). The signed
//! products use the `|c|` / `sign(q, c)` trick: `maddubs` (AVX2, AVX-512) and `vpdpbusd`
//! (VNNI) multiply unsigned by signed bytes, and `c·q = |c|·(sign(c)·q)`. Nothing saturates:
//! `|c| ≤ 128` and `|q| ≤ 127` (our activations never hold −128), so a `maddubs` pair is at most
//! 32 512 < 2^15. Q4_1/Q5_1 codes are unsigned already (0..31) and go in as they are.
//!
//! The i32 lane sums of several blocks are reduced together to one exact i32 per block
//! ([`reduce4`], [`reduce8`]), converted to f32 and scaled by as many `d_w·d_a` at once (F16C
//! converts eight halves per instruction), then added to an f32 vector accumulator:
//!
//! - AVX2: four blocks per iteration, `maddubs` + `madd` per block.
//! - AVX-512 BW: eight per iteration, two blocks per 512-bit `maddubs`.
//! - AVX-512 VNNI: four per iteration, one 256-bit `vpdpbusd` per block. (Two blocks per
//!   512-bit `vpdpbusd` measured 5-10% slower on the AMD EPYC (Zen 4) this was written on,
//!   which splits 512-bit operations in two, as does the AVX-512 BW path against AVX2 there.)
//!
//! Left-over blocks (fewer than a full iteration) take the AVX2 loop, then the scalar path's
//! per-block term. Blocks are byte arrays at any address: every load is unaligned.

use std::arch::x86_64::*;

use super::scalar::term;
use super::{ActBlock, Block32, Codes, Scale};

/// Whether the codes are non-negative (no offset subtracted), so they can be the unsigned
/// operand of `maddubs`/`vpdpbusd` without the sign trick.
const fn unsigned<B: Block32>() -> bool {
    matches!(
        B::CODES,
        Codes::Nibbles { offset: 0 } | Codes::Fives { offset: 0 }
    )
}

/// Loads 16 bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn load16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` has at least 16 readable bytes (asserted); the load is unaligned.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Loads 32 bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: `b` has at least 32 readable bytes (asserted); the load is unaligned.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// An activation block's 32 codes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn act_codes<A: ActBlock>(a: &A) -> __m256i {
    let q = a.qs();
    // SAFETY: i8 and u8 have the same layout; the view borrows `q`.
    load32(unsafe { std::slice::from_raw_parts(q.as_ptr().cast::<u8>(), q.len()) })
}

/// 16 bytes of nibbles as 32 bytes in weight order: low nibbles (weights 0..16), then high
/// nibbles (weights 16..32).
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(qs: &[u8]) -> __m256i {
    let q = load16(qs);
    let x = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
    _mm256_and_si256(x, _mm256_set1_epi8(0x0f))
}

/// Bit `i` of `qh` as byte `i` (0x10 where set, else 0): the fifth bits of a Q5 block.
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qh: u32) -> __m256i {
    // Byte i takes qh's byte i / 8 (the shuffle stays within each 128-bit half, which both
    // hold all four bytes), then tests bit i % 8.
    let v = _mm256_set1_epi32(qh as i32);
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, pick), bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// A block's 32 codes `c_i` as i8, in weight order.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn codes<B: Block32>(w: &B) -> __m256i {
    match B::CODES {
        Codes::Bytes => load32(w.qs()),
        Codes::Nibbles { offset } => _mm256_sub_epi8(nibbles(w.qs()), _mm256_set1_epi8(offset)),
        Codes::Fives { offset } => {
            let c = _mm256_or_si256(nibbles(w.qs()), fifth_bits(w.qh()));
            _mm256_sub_epi8(c, _mm256_set1_epi8(offset))
        }
        Codes::Table(t) => {
            // SAFETY: i8 and u8 have the same layout; the view borrows the table.
            let t = unsafe { std::slice::from_raw_parts(t.as_ptr().cast::<u8>(), 16) };
            _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(load16(t)), nibbles(w.qs()))
        }
    }
}

/// One block's products as 8 i32 lanes (their sum is `Σ c_i·q_i`), with AVX2.
#[inline]
#[target_feature(enable = "avx2")]
fn block_lanes_avx2<B: Block32>(w: &B, a: &B::Act) -> __m256i {
    let (c, q) = (codes(w), act_codes(a));
    let p16 = if unsigned::<B>() {
        _mm256_maddubs_epi16(c, q)
    } else {
        _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(q, c))
    };
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// The same with `vpdpbusd` on 256 bits (AVX-512 VNNI + VL).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn block_lanes_vnni<B: Block32>(w: &B, a: &B::Act) -> __m256i {
    let (c, q) = (codes(w), act_codes(a));
    let zero = _mm256_setzero_si256();
    if unsigned::<B>() {
        _mm256_dpbusd_epi32(zero, c, q)
    } else {
        _mm256_dpbusd_epi32(zero, _mm256_sign_epi8(c, c), _mm256_sign_epi8(q, c))
    }
}

/// Two blocks' codes (or activations) in one 512-bit register: block 0 in the low half.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn pair(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `|c|` and `sign(c)·q` of 64 bytes (AVX-512 has no `vpsignb`: negate where `c < 0`; where
/// `c = 0` the product is 0 either way).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn abs_sign512(c: __m512i, q: __m512i) -> (__m512i, __m512i) {
    let neg = _mm512_movepi8_mask(c);
    (
        _mm512_abs_epi8(c),
        _mm512_mask_sub_epi8(q, neg, _mm512_setzero_si512(), q),
    )
}

/// Two blocks' products as 16 i32 lanes (8 per block), with AVX-512 BW.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn pair_lanes_avx512<B: Block32>(w: &[B], a: &[B::Act]) -> __m512i {
    let c = pair(codes(&w[0]), codes(&w[1]));
    let q = pair(act_codes(&a[0]), act_codes(&a[1]));
    let p16 = if unsigned::<B>() {
        _mm512_maddubs_epi16(c, q)
    } else {
        let (ac, sq) = abs_sign512(c, q);
        _mm512_maddubs_epi16(ac, sq)
    };
    _mm512_madd_epi16(p16, _mm512_set1_epi16(1))
}

/// Eight blocks' sums from four registers of two blocks each (`s_k` holds blocks `2k` and
/// `2k + 1`, 8 lanes each), exactly (i32), in block order.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn reduce8(s0: __m512i, s1: __m512i, s2: __m512i, s3: __m512i) -> __m256i {
    // Within each 128-bit lane: interleave-and-add twice leaves [Σs0, Σs1, Σs2, Σs3] of that
    // lane's four values. Lanes 0-1 hold the even blocks, 2-3 the odd ones: add the lane pairs.
    let u = _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
    let v = _mm512_add_epi32(_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
    let w = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
    let x = _mm512_add_epi32(w, _mm512_shuffle_i32x4::<0b10_11_00_01>(w, w));
    // Lane 0: blocks 0, 2, 4, 6; lane 2: blocks 1, 3, 5, 7.
    let s = _mm256_set_m128i(_mm512_extracti32x4_epi32::<2>(x), _mm512_castsi512_si128(x));
    _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Sixteen f16 bit patterns to f32: lanes 0..8 and 8..16 as two vectors.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16x16(h: [u16; 16]) -> (__m256, __m256) {
    // SAFETY: `h` is 32 readable bytes; the loads are unaligned.
    unsafe {
        (
            _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr().add(8).cast())),
        )
    }
}

/// Eight blocks' terms from their exact sums `s`, as [`terms4`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn terms8<B: Block32>(w: &[B], a: &[B::Act], s: __m256i) -> __m256 {
    let (w, a) = (&w[..8], &a[..8]);
    let (dw, da) = f16x16(std::array::from_fn(|i| {
        if i < 8 {
            w[i].scale_bits()
        } else {
            a[i - 8].d_bits()
        }
    }));
    let dw = match B::SCALE {
        Scale::F16 => dw,
        Scale::E8M0Half => _mm256_setr_ps(
            w[0].scale(),
            w[1].scale(),
            w[2].scale(),
            w[3].scale(),
            w[4].scale(),
            w[5].scale(),
            w[6].scale(),
            w[7].scale(),
        ),
    };
    let t = _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(s));
    if B::HAS_MIN {
        let (m, sa) = f16x16(std::array::from_fn(|i| {
            if i < 8 {
                w[i].min_bits()
            } else {
                a[i - 8].s_bits()
            }
        }));
        _mm256_fmadd_ps(m, sa, t)
    } else {
        t
    }
}

/// Sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_f32x8(v: __m256) -> f32 {
    hsum_f32(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps::<1>(v),
    ))
}

/// Four blocks' 8-lane sums reduced to `[Σ p0, Σ p1, Σ p2, Σ p3]`, exactly (i32).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn reduce4(p0: __m256i, p1: __m256i, p2: __m256i, p3: __m256i) -> __m128i {
    // hadd pairs neighbours within each 128-bit half; three rounds leave, per half, one
    // partial sum of each block; adding the halves completes them.
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_i32(p: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Sum of 4 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_f32(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Eight f16 bit patterns to f32: lanes 0..4 and 4..8 as two vectors.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16x8(h: [u16; 8]) -> (__m128, __m128) {
    // SAFETY: `h` is 16 readable bytes; the load is unaligned.
    let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) });
    (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v))
}

/// Four blocks' terms from their exact sums `s`: `(d_w·d_a)·s (+ m_w·s_a)`, as `term` computes
/// each (the offset product is fused into the add).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn terms4<B: Block32>(w: &[B], a: &[B::Act], s: __m128i) -> __m128 {
    let (w, a) = (&w[..4], &a[..4]);
    let (dw, da) = match B::SCALE {
        Scale::F16 => f16x8(std::array::from_fn(|i| {
            if i < 4 {
                w[i].scale_bits()
            } else {
                a[i - 4].d_bits()
            }
        })),
        Scale::E8M0Half => {
            let (_, da) = f16x8(std::array::from_fn(|i| a[i % 4].d_bits()));
            let dw = _mm_setr_ps(w[0].scale(), w[1].scale(), w[2].scale(), w[3].scale());
            (dw, da)
        }
    };
    let t = _mm_mul_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(s));
    if B::HAS_MIN {
        let (m, sa) = f16x8(std::array::from_fn(|i| {
            if i < 4 {
                w[i].min_bits()
            } else {
                a[i - 4].s_bits()
            }
        }));
        _mm_fmadd_ps(m, sa, t)
    } else {
        t
    }
}

/// AVX2 path.
///
/// # Safety
///
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dot_avx2<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    let mut acc = _mm_setzero_ps();
    let (w4, a4) = (w.chunks_exact(4), a.chunks_exact(4));
    let (wr, ar) = (w4.remainder(), a4.remainder());
    for (w, a) in w4.zip(a4) {
        let s = reduce4(
            block_lanes_avx2(&w[0], &a[0]),
            block_lanes_avx2(&w[1], &a[1]),
            block_lanes_avx2(&w[2], &a[2]),
            block_lanes_avx2(&w[3], &a[3]),
        );
        acc = _mm_add_ps(acc, terms4(w, a, s));
    }
    let mut sum = hsum_f32(acc);
    for (w, a) in wr.iter().zip(ar) {
        sum += term(w, a, hsum_i32(block_lanes_avx2(w, a)));
    }
    sum
}

/// AVX-512 BW path: two blocks per 512-bit `maddubs`.
///
/// # Safety
///
/// The CPU must have AVX2, FMA, F16C, AVX-512 F, BW and VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
pub(super) unsafe fn dot_avx512<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (w8, a8) = (w.chunks_exact(8), a.chunks_exact(8));
    let (wr, ar) = (w8.remainder(), a8.remainder());
    for (w, a) in w8.zip(a8) {
        let s = reduce8(
            pair_lanes_avx512(&w[..2], &a[..2]),
            pair_lanes_avx512(&w[2..4], &a[2..4]),
            pair_lanes_avx512(&w[4..6], &a[4..6]),
            pair_lanes_avx512(&w[6..], &a[6..]),
        );
        acc = _mm256_add_ps(acc, terms8(w, a, s));
    }
    hsum_f32x8(acc) + dot_avx2(wr, ar)
}

/// AVX-512 VNNI path: two blocks per 512-bit `vpdpbusd`.
///
/// # Safety
///
/// The CPU must have AVX2, FMA, F16C, AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) unsafe fn dot_avx512_vnni<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    let mut acc = _mm_setzero_ps();
    let (w4, a4) = (w.chunks_exact(4), a.chunks_exact(4));
    let (wr, ar) = (w4.remainder(), a4.remainder());
    for (w, a) in w4.zip(a4) {
        let s = reduce4(
            block_lanes_vnni(&w[0], &a[0]),
            block_lanes_vnni(&w[1], &a[1]),
            block_lanes_vnni(&w[2], &a[2]),
            block_lanes_vnni(&w[3], &a[3]),
        );
        acc = _mm_add_ps(acc, terms4(w, a, s));
    }
    let mut sum = hsum_f32(acc);
    for (w, a) in wr.iter().zip(ar) {
        sum += term(w, a, hsum_i32(block_lanes_vnni(w, a)));
    }
    sum
}

/// One token against every row: `out[r]` = the row dot of row `r` of `w` (rows of `nb`
/// blocks, back to back) with `a`, by the same code as one `vec_dot` per row (so the same
/// value), in one call. With short rows (MLA's `k_b`: 4 blocks of 128 columns) a call per
/// row spent more on dispatch than on the dot itself.
macro_rules! rows_fn {
    ($name:ident, $dot:ident, $features:literal) => {
        /// [`rows_fn`] over this path.
        ///
        /// # Safety
        ///
        /// The CPU must have the features this function enables; `w` is whole rows of `nb`
        /// blocks, `a` is `nb` blocks, `out` has a value per row.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<B: Block32>(w: &[B], nb: usize, a: &[B::Act], out: &mut [f32]) {
            for (row, o) in w.chunks_exact(nb).zip(out) {
                // SAFETY: the same features are enabled here.
                *o = unsafe { $dot(row, a) };
            }
        }
    };
}

rows_fn!(rows_avx2, dot_avx2, "avx2,fma,f16c");
rows_fn!(
    rows_avx512,
    dot_avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl"
);
rows_fn!(
    rows_avx512_vnni,
    dot_avx512_vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
);
