//! x86-64 tiles of the quantized product (`quant::gemm`) for Q4_K, Q5_K and Q6_K against Q8_K:
//! `R` weight rows × `T` activation rows at a time.
//!
//! Each super-block of a row is decoded once per tile (codes, scale vectors, offsets) and
//! dotted with `T` tokens' Q8_K blocks; each Q8_K vector is loaded once and used for `R` rows.
//! The integer part per (row, token, block) is, as in `vec_dot`, exact:
//!
//! ```text
//! isum  = Σ_s sc_s · Σ_{i∈s} u_i·a_i  (− off·Σ_s sc_s·bsum_s for Q6_K, u = q + 32)
//! summs = Σ_s m_s · bsum_s             (Q4_K/Q5_K)
//! ```
//!
//! here as `pmaddubsw` (u8 codes × i8 activations into i16 pairs, `≤ 2·63·127 < 2^15`: no
//! saturation) then the sub-block scale product, `vpdpwssd` (VNNI) or `pmaddwd` + add, with
//! the scale broadcast to i16 lanes: two instructions per 32 weights (64 on 512 bits), where
//! `vec_dot`'s VNNI path also spends a permute and a `vpmulld`. Q6_K's offset term is folded
//! into the same accumulator as one `pmaddwd` of the bsums with `−32·sc`.
//!
//! The 512-bit ISAs (VNNI, AVX-512 BW) decode a block straight into four 64-byte registers
//! (code vectors `2c`, `2c + 1`, and their scale vectors): Zen 4 runs a 512-bit operation as
//! two 256-bit halves, so the multiplies are no faster, but decoding and issuing take about
//! half the instructions, and with one token (decode) decoding is most of the work.
//!
//! Tiles are 2 rows × 8 tokens (VNNI, AVX-512: 16 accumulators of the 32 vector registers) or
//! 1 × 8 (AVX2, 16 registers): decoding a super-block costs about as much as its dot with one
//! token, so the token count is what amortizes it. A tile of 8 tokens runs the float step
//! across token lanes (`tile8`); fewer tokens (the rest of a batch) take the general
//! tile, which reduces eight blocks at a time as `vec_dot` does. With one token rows go one at
//! a time: reading two rows side by side from DRAM measured 2-3× slower.

// The tiles index several arrays (rows, tokens, code vectors) by the same loop counters.
#![allow(clippy::needless_range_loop)]

use super::x86::isum::{PAIR_K, QUAD_K, WORD_K};
use super::x86::{bsums, codes_k4, codes_q6k, f16, load32, transpose_sum8, Codes};
use crate::quant::act::BlockQ8K;
use crate::quant::{BlockQ4K, BlockQ5K, BlockQ6K};
use std::arch::x86_64::*;

/// The k-quant block types with a tiled product.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Q4K,
    Q5K,
    Q6K,
}

/// A weight block with a tiled product; `KIND` picks its decoder.
pub(super) trait TileBlock: Copy {
    const KIND: Kind;
}
impl TileBlock for BlockQ4K {
    const KIND: Kind = Kind::Q4K;
}
impl TileBlock for BlockQ5K {
    const KIND: Kind = Kind::Q5K;
}
impl TileBlock for BlockQ6K {
    const KIND: Kind = Kind::Q6K;
}

/// One super-block decoded for the 256-bit tile: unsigned codes `u`, the scale vector `s[k]`
/// of code vector `k`, the offset vector `off` (Q4_K/Q5_K: offsets against the 16 bsums;
/// Q6_K: `−32·sc` against them); returns the f32 super-scales `(d, dmin)`. Written into the
/// caller's arrays (no closures or returned aggregates: everything must inline).
///
/// # Safety
/// AVX2, F16C must be available; `B::KIND` must name `B`'s real type.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn decode256<B: TileBlock>(
    w: &B,
    u: &mut Codes,
    s: &mut [__m256i; 8],
    off: &mut __m256i,
) -> (f32, f32) {
    // SAFETY (the casts): `KIND` is the block's own type (the trait impls above); the loads
    // read 16 or 32 bytes of arrays that long.
    unsafe {
        match B::KIND {
            Kind::Q4K | Kind::Q5K => {
                let (qs, qh, scales, d, dmin) = k4_fields(w);
                let (sc, m) = k4_scales_simd(scales);
                *u = codes_k4(qs, qh);
                // Sub-blocks of 32: code vector k has one scale in every lane.
                let sc = _mm256_broadcastsi128_si256(sc);
                for k in 0..8 {
                    s[k] = _mm256_shuffle_epi8(sc, load32(WORD_K[k].as_ptr()));
                }
                *off = m;
                (f16(d), f16(dmin))
            }
            Kind::Q6K => {
                let w = &*(w as *const B).cast::<BlockQ6K>();
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.scales.as_ptr().cast()));
                // Sub-blocks of 16: code vector k takes scale 2k in its low 128-bit half and
                // 2k + 1 in its high half (in-lane `pshufb` from scales 0..8 or 8..16).
                let halves = [
                    _mm256_permute4x64_epi64::<0b01_00_01_00>(sc),
                    _mm256_permute4x64_epi64::<0b11_10_11_10>(sc),
                ];
                *u = codes_q6k(w);
                for k in 0..8 {
                    s[k] = _mm256_shuffle_epi8(halves[k / 4], load32(PAIR_K[k % 4].as_ptr()));
                }
                *off = q6k_off(sc);
                (f16(w.d), 0.0)
            }
        }
    }
}

/// Q4_K/Q5_K's fields: `qs`, `qh` (Q5_K), a pointer to the packed scales, `d`, `dmin`.
type K4Fields<'a> = (
    &'a [u8; 128],
    Option<&'a [u8; 32]>,
    *const u8,
    [u8; 2],
    [u8; 2],
);

/// Q4_K/Q5_K's fields (see [`K4Fields`]).
///
/// # Safety
/// `B::KIND` is Q4K or Q5K and names `B`'s real type.
#[inline(always)]
unsafe fn k4_fields<B: TileBlock>(w: &B) -> K4Fields<'_> {
    // Both start `d, dmin, scales` and have more than 16 bytes after the scales' start, so
    // the 16-byte read of `k4_scales_simd` at byte 4 stays inside the block.
    let scales = (w as *const B).cast::<u8>().wrapping_add(4);
    // SAFETY: the caller's guarantee; both are repr(C) byte arrays.
    unsafe {
        if B::KIND == Kind::Q4K {
            let w = &*(w as *const B).cast::<BlockQ4K>();
            (&w.qs, None, scales, w.d, w.dmin)
        } else {
            let w = &*(w as *const B).cast::<BlockQ5K>();
            (&w.qs, Some(&w.qh), scales, w.d, w.dmin)
        }
    }
}

/// Q4_K/Q5_K's 12 packed scale bytes (at `p`, which must have 16 readable bytes: the blocks'
/// `qs` follow the scales) as 8 scales (i16, low 128 bits) and the 8 offsets widened to the 16
/// bsum lanes (offset `s` in lanes `2s`, `2s + 1`). The SIMD form of [`k4_unpack`]: with
/// bytes `b`, scale/offset `j < 4` are `b[j] & 63` / `b[4 + j] & 63`, and `j ≥ 4` take the low
/// (scales) or high (offsets) nibble of `b[4 + j]` plus the top 2 bits of `b[j − 4]` (scales) or
/// `b[j]` (offsets) as bits 4..6. (The scalar path's four word stores then one 16-byte load
/// cannot be store-forwarded and stall.)
///
/// [`k4_unpack`]: super::k4_unpack
///
/// # Safety
/// AVX2 must be available; `p..p+16` readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn k4_scales_simd(p: *const u8) -> (__m128i, __m256i) {
    // SAFETY: the caller's 16 bytes.
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    // Output bytes 0..8 scales, 8..16 offsets: the byte holding the low part ...
    let x = _mm_shuffle_epi8(
        v,
        _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11),
    );
    // ... and the byte whose top 2 bits are bits 4..6 (none for j < 4).
    let z = -128;
    let y = _mm_shuffle_epi8(
        v,
        _mm_setr_epi8(z, z, z, z, 0, 1, 2, 3, z, z, z, z, 4, 5, 6, 7),
    );
    // Offsets 4..8 take the high nibble (a 16-bit shift: the mask drops the neighbour's bits).
    let x = _mm_blend_epi16::<0b1100_0000>(x, _mm_srli_epi16::<4>(x));
    let low = _mm_and_si128(
        x,
        _mm_setr_epi8(
            63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15,
        ),
    );
    let high = _mm_and_si128(_mm_srli_epi16::<2>(y), _mm_set1_epi8(0x30));
    let o = _mm_or_si128(low, high);
    let dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    (
        _mm_cvtepu8_epi16(o),
        _mm256_cvtepu8_epi16(_mm_shuffle_epi8(o, dup)),
    )
}

/// Q6_K's offset vector `−32·sc` (each in [−4064, 4096]: fits i16) from the 16 scales.
#[target_feature(enable = "avx2")]
#[inline]
fn q6k_off(sc: __m256i) -> __m256i {
    _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(sc))
}

/// Code vectors `2c`, `2c + 1` of a block (and their scale vectors) as one 512-bit register.
type Pairs = [__m512i; 4];

/// `vpshufb` patterns (within 128-bit lanes) for Q4_K/Q5_K's 512-bit scale vectors: pair `c`
/// takes scale `2c` in its low 256 bits and `2c + 1` in its high 256 bits, from 8 i16 scales
/// repeated in every lane.
const PAIR_SCALE_32: [[u8; 64]; 4] = {
    let mut m = [[0u8; 64]; 4];
    let mut c = 0;
    while c < 4 {
        let mut i = 0;
        while i < 64 {
            m[c][i] = (2 * (2 * c + i / 32) + i % 2) as u8;
            i += 1;
        }
        c += 1;
    }
    m
};

/// `lo` in every i16 lane of the low 256 bits, `hi` in the high 256 bits (shift counts).
#[target_feature(enable = "avx2,avx512f,avx512bw")]
#[inline]
fn halves(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
        _mm256_set1_epi16(hi),
    )
}

/// [`decode256`] for the 512-bit tile: pairs of code vectors, built from one load per 64
/// codes. A 16-bit shift by a different amount in each 256-bit half (`vpsrlvw`) and a byte
/// mask take nibble (or bit pair) `n` of every byte: no bit of another byte can reach the
/// kept bits.
///
/// # Safety
/// AVX-512 BW must be available; `B::KIND` must name `B`'s real type.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn decode512<B: TileBlock>(
    w: &B,
    u: &mut Pairs,
    s: &mut Pairs,
    off: &mut __m256i,
) -> (f32, f32) {
    // SAFETY (casts and loads): as in `decode256`; each load reads an array of that length.
    unsafe {
        match B::KIND {
            Kind::Q4K | Kind::Q5K => {
                let (qs, qh, scales, d, dmin) = k4_fields(w);
                let (sc, m) = k4_scales_simd(scales);
                let m4 = _mm512_set1_epi8(0x0f);
                // Codes 64c..64c+32 are the low nibbles of qs[32c..32c+32], 64c+32.. the high.
                let by4 = halves(0, 4);
                for c in 0..4 {
                    let x = _mm512_broadcast_i64x4(load32(qs.as_ptr().add(32 * c)));
                    u[c] = _mm512_and_si512(_mm512_srlv_epi16(x, by4), m4);
                }
                if let Some(qh) = qh {
                    // Q5_K: bit 2c (low half) or 2c + 1 (high half) of qh[l] adds 16.
                    let hb = _mm512_broadcast_i64x4(load32(qh.as_ptr()));
                    let one = _mm512_set1_epi8(1);
                    for c in 0..4 {
                        let n = 2 * c as i16;
                        let bit = _mm512_and_si512(_mm512_srlv_epi16(hb, halves(n, n + 1)), one);
                        u[c] = _mm512_or_si512(u[c], _mm512_slli_epi16::<4>(bit));
                    }
                }
                let sc = _mm512_broadcast_i32x4(sc);
                for c in 0..4 {
                    let idx = _mm512_loadu_si512(PAIR_SCALE_32[c].as_ptr().cast());
                    s[c] = _mm512_shuffle_epi8(sc, idx);
                }
                *off = m;
                (f16(d), f16(dmin))
            }
            Kind::Q6K => {
                let w = &*(w as *const B).cast::<BlockQ6K>();
                let (m4, m3) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(3));
                for h in 0..2 {
                    // Pair 2h: low nibbles of ql[64h..64h+64] (vectors 4h, 4h+1), high bits
                    // 0..2 / 2..4 of qh[32h..]; pair 2h+1: high nibbles, bits 4..6 / 6..8.
                    let l = _mm512_loadu_si512(w.ql.as_ptr().add(64 * h).cast());
                    let hb = _mm512_broadcast_i64x4(load32(w.qh.as_ptr().add(32 * h)));
                    let hi0 = _mm512_and_si512(_mm512_srlv_epi16(hb, halves(0, 2)), m3);
                    let hi1 = _mm512_and_si512(_mm512_srlv_epi16(hb, halves(4, 6)), m3);
                    let lo0 = _mm512_and_si512(l, m4);
                    let lo1 = _mm512_and_si512(_mm512_srli_epi16::<4>(l), m4);
                    u[2 * h] = _mm512_or_si512(lo0, _mm512_slli_epi16::<4>(hi0));
                    u[2 * h + 1] = _mm512_or_si512(lo1, _mm512_slli_epi16::<4>(hi1));
                }
                // Sub-blocks of 16: 128-bit lane L of pair c takes scale 4c + L.
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.scales.as_ptr().cast()));
                let sc512 = _mm512_castsi256_si512(sc);
                for c in 0..4 {
                    let idx = _mm512_loadu_si512(QUAD_K[c].as_ptr().cast());
                    s[c] = _mm512_permutexvar_epi16(idx, sc512);
                }
                *off = q6k_off(sc);
                (f16(w.d), 0.0)
            }
        }
    }
}

/// The float step of up to eight blocks for one (row, token), added to `acc` in block order:
/// `vec_dot`'s `block_loop`, term for term (`dall = d_a·d`, `dm = d_a·dmin` per block). Lanes
/// `m..8` of the integer vectors may hold anything: each result lane depends only on its own
/// block, and only the first `m` are added.
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn finish8(
    acc: &mut f32,
    isums: &[__m256i; 8],
    summs: &[__m256i; 8],
    mins: bool,
    dall: __m256,
    dm: __m256,
    m: usize,
) {
    // SAFETY: the arrays are 32 bytes each.
    let vals = unsafe {
        let x = _mm256_cvtepi32_ps(transpose_sum8(isums));
        let t = _mm256_mul_ps(dall, x);
        let t = if mins {
            let s = _mm256_cvtepi32_ps(transpose_sum8(summs));
            _mm256_sub_ps(t, _mm256_mul_ps(dm, s))
        } else {
            t
        };
        let mut vals = [0.0f32; 8];
        _mm256_storeu_ps(vals.as_mut_ptr(), t);
        vals
    };
    for &v in &vals[..m] {
        *acc += v;
    }
}

/// A block's integer lanes for `R` rows × `T` tokens on 256 bits: per code vector,
/// `pmaddubsw` then `pmaddwd` with its scales and an add.
///
/// # Safety
/// The CPU must have AVX2; `a[t]` points at 256 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lanes256<const R: usize, const T: usize>(
    u: &[Codes; R],
    s: &[[__m256i; 8]; R],
    a: &[*const i8; T],
    lanes: &mut [[__m256i; T]; R],
) {
    for k in 0..8 {
        for t in 0..T {
            // SAFETY: the caller's 256 bytes; this reads bytes 32k..32k+32.
            let av = unsafe { load32(a[t].add(32 * k).cast()) };
            for r in 0..R {
                let p = _mm256_maddubs_epi16(u[r][k], av);
                lanes[r][t] = _mm256_add_epi32(lanes[r][t], _mm256_madd_epi16(p, s[r][k]));
            }
        }
    }
}

/// The same on 512 bits (pairs of code vectors against the activations' bytes `64c..64c+64`),
/// the scale product by `$mac`; the halves are added at the end.
macro_rules! lanes512 {
    ($name:ident, $features:literal, |$acc:ident, $p:ident, $s:ident| $mac:expr) => {
        /// # Safety
        /// The CPU must have the features; `a[t]` points at 256 readable bytes.
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $name<const R: usize, const T: usize>(
            u: &[Pairs; R],
            s: &[Pairs; R],
            a: &[*const i8; T],
            lanes: &mut [[__m256i; T]; R],
        ) {
            let mut acc = [[_mm512_setzero_si512(); T]; R];
            for c in 0..4 {
                for t in 0..T {
                    // SAFETY: the caller's 256 bytes; this reads bytes 64c..64c+64.
                    let av = unsafe { _mm512_loadu_si512(a[t].add(64 * c).cast()) };
                    for r in 0..R {
                        let ($acc, $p, $s) =
                            (acc[r][t], _mm512_maddubs_epi16(u[r][c], av), s[r][c]);
                        acc[r][t] = $mac;
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    let v = acc[r][t];
                    lanes[r][t] = _mm256_add_epi32(
                        _mm512_castsi512_si256(v),
                        _mm512_extracti64x4_epi64::<1>(v),
                    );
                }
            }
        }
    };
}
lanes512!(
    lanes_vnni,
    "avx2,avx512f,avx512bw,avx512vl,avx512vnni",
    |acc, p, s| _mm512_dpwssd_epi32(acc, p, s)
);
lanes512!(
    lanes_avx512,
    "avx2,avx512f,avx512bw,avx512vl",
    |acc, p, s| _mm512_add_epi32(acc, _mm512_madd_epi16(p, s))
);

/// One ISA's tiles and driver: `$r` rows × up to `$t` tokens per tile.
macro_rules! tiles {
    ($isa:ident, $features:literal, $decode:ident, $lanes:ident, $v:ty, $r:literal, $t:literal) => {
        pub(crate) mod $isa {
            use super::*;

            /// `out[t·stride + r] = Σ w_r·a_t` for the `R` rows and `T` activation rows.
            ///
            /// # Safety
            /// The CPU must have `$features`; every row and activation row holds `nb` blocks.
            #[target_feature(enable = $features)]
            unsafe fn tile<B: TileBlock, const R: usize, const T: usize>(
                w: [&[B]; R],
                a: [&[BlockQ8K]; T],
                nb: usize,
                out: &mut [f32],
                stride: usize,
            ) {
                let mins = B::KIND != Kind::Q6K;
                let zero = _mm256_setzero_si256();
                let mut acc = [[0.0f32; T]; R];
                // Per group of eight blocks, (row, token, block) integer lanes. Not cleared
                // between groups: a short last group leaves stale lanes that `finish8` ignores.
                let mut isums = [[[zero; 8]; T]; R];
                let mut summs = [[[zero; 8]; T]; R];
                let (mut dw, mut dmw) = ([[0.0f32; 8]; R], [[0.0f32; 8]; R]);
                let mut da = [[0.0f32; 8]; T];
                // SAFETY: all-zero bits are valid SIMD vectors.
                let mut u: [$v; R] = unsafe { std::mem::zeroed() };
                let mut s: [$v; R] = unsafe { std::mem::zeroed() };
                let mut off = [zero; R];
                let mut g = 0;
                while g < nb {
                    let m = (nb - g).min(8);
                    for j in 0..m {
                        let b = g + j;
                        for r in 0..R {
                            // SAFETY: the features `decode` needs are enabled here.
                            (dw[r][j], dmw[r][j]) = unsafe {
                                $decode::<B>(&w[r][b], &mut u[r], &mut s[r], &mut off[r])
                            };
                        }
                        let mut ap = [std::ptr::null(); T];
                        for t in 0..T {
                            ap[t] = a[t][b].qs.as_ptr();
                            da[t][j] = a[t][b].d();
                        }
                        let mut lanes = [[zero; T]; R];
                        // SAFETY: each `ap[t]` is a 256-byte `qs`; the features are enabled.
                        unsafe { $lanes(&u, &s, &ap, &mut lanes) };
                        for t in 0..T {
                            // SAFETY: AVX2 is enabled here.
                            let bs = unsafe { bsums(&a[t][b]) };
                            for r in 0..R {
                                if mins {
                                    summs[r][t][j] = _mm256_madd_epi16(bs, off[r]);
                                    isums[r][t][j] = lanes[r][t];
                                } else {
                                    let o = _mm256_madd_epi16(bs, off[r]);
                                    isums[r][t][j] = _mm256_add_epi32(lanes[r][t], o);
                                }
                            }
                        }
                    }
                    for t in 0..T {
                        // SAFETY: the arrays are 32 bytes each; AVX2 is enabled here.
                        unsafe {
                            let da = _mm256_loadu_ps(da[t].as_ptr());
                            for r in 0..R {
                                let dall = _mm256_mul_ps(da, _mm256_loadu_ps(dw[r].as_ptr()));
                                let dm = _mm256_mul_ps(da, _mm256_loadu_ps(dmw[r].as_ptr()));
                                finish8(
                                    &mut acc[r][t],
                                    &isums[r][t],
                                    &summs[r][t],
                                    mins,
                                    dall,
                                    dm,
                                    m,
                                );
                            }
                        }
                    }
                    g += m;
                }
                for t in 0..T {
                    for r in 0..R {
                        out[t * stride + r] = acc[r][t];
                    }
                }
            }
            /// [`tile`] for exactly 8 tokens with the float step across tokens: per block and
            /// row, the 8 tokens' integer lanes are reduced together (lane `t` = token `t`) and
            /// the step `(d_a·d)·isum − (d_a·dmin)·summs` runs on 8 token lanes, added to a
            /// vector of the row's 8 running sums. Each lane adds its token's block values in
            /// block order, the same values as `vec_dot`: bit for bit its result, without the
            /// per-group storage and scalar adds of [`tile`].
            ///
            /// # Safety
            /// As [`tile`].
            #[target_feature(enable = $features)]
            unsafe fn tile8<B: TileBlock, const R: usize>(
                w: [&[B]; R],
                a: [&[BlockQ8K]; 8],
                nb: usize,
                out: &mut [f32],
                stride: usize,
            ) {
                let mins = B::KIND != Kind::Q6K;
                let zero = _mm256_setzero_si256();
                let mut acc = [_mm256_setzero_ps(); R];
                let (mut dw, mut dmw) = ([0.0f32; R], [0.0f32; R]);
                // SAFETY: all-zero bits are valid SIMD vectors.
                let mut u: [$v; R] = unsafe { std::mem::zeroed() };
                let mut s: [$v; R] = unsafe { std::mem::zeroed() };
                let mut off = [zero; R];
                for b in 0..nb {
                    for r in 0..R {
                        // SAFETY: the features `decode` needs are enabled here.
                        (dw[r], dmw[r]) =
                            unsafe { $decode::<B>(&w[r][b], &mut u[r], &mut s[r], &mut off[r]) };
                    }
                    let ab = [
                        &a[0][b], &a[1][b], &a[2][b], &a[3][b], &a[4][b], &a[5][b], &a[6][b],
                        &a[7][b],
                    ];
                    let ap = ab.map(|x| x.qs.as_ptr());
                    let mut lanes = [[zero; 8]; R];
                    // SAFETY: each `ap[t]` is a 256-byte `qs`; the features are enabled.
                    unsafe { $lanes(&u, &s, &ap, &mut lanes) };
                    let da = _mm256_setr_ps(
                        ab[0].d(),
                        ab[1].d(),
                        ab[2].d(),
                        ab[3].d(),
                        ab[4].d(),
                        ab[5].d(),
                        ab[6].d(),
                        ab[7].d(),
                    );
                    let mut sv = [[zero; 8]; R];
                    for t in 0..8 {
                        // SAFETY: AVX2 is enabled here.
                        let bs = unsafe { bsums(ab[t]) };
                        for r in 0..R {
                            let o = _mm256_madd_epi16(bs, off[r]);
                            if mins {
                                sv[r][t] = o;
                            } else {
                                lanes[r][t] = _mm256_add_epi32(lanes[r][t], o);
                            }
                        }
                    }
                    for r in 0..R {
                        // SAFETY: AVX2 is enabled here.
                        let x = _mm256_cvtepi32_ps(unsafe { transpose_sum8(&lanes[r]) });
                        let dall = _mm256_mul_ps(da, _mm256_set1_ps(dw[r]));
                        let mut t = _mm256_mul_ps(dall, x);
                        if mins {
                            // SAFETY: AVX2 is enabled here.
                            let m = _mm256_cvtepi32_ps(unsafe { transpose_sum8(&sv[r]) });
                            let dm = _mm256_mul_ps(da, _mm256_set1_ps(dmw[r]));
                            t = _mm256_sub_ps(t, _mm256_mul_ps(dm, m));
                        }
                        acc[r] = _mm256_add_ps(acc[r], t);
                    }
                }
                for r in 0..R {
                    let mut v = [0.0f32; 8];
                    // SAFETY: `v` is 32 bytes.
                    unsafe { _mm256_storeu_ps(v.as_mut_ptr(), acc[r]) };
                    for t in 0..8 {
                        out[t * stride + r] = v[t];
                    }
                }
            }

            /// Every token group (of `$t`, then the rest) for the rows `w`.
            ///
            /// # Safety
            /// As [`tile`].
            #[target_feature(enable = $features)]
            unsafe fn tokens<B: TileBlock, const R: usize>(
                w: [&[B]; R],
                a: &[&[BlockQ8K]],
                nb: usize,
                out: &mut [f32],
                stride: usize,
            ) {
                let mut t0 = 0;
                while t0 < a.len() {
                    let o = &mut out[t0 * stride..];
                    let left = a.len() - t0;
                    // Full tiles, then a rest of 4 (where tiles are wider) and 1..3.
                    let take = if left >= $t {
                        $t
                    } else if left >= 4 {
                        4
                    } else {
                        left
                    };
                    let at = &a[t0..t0 + take];
                    // SAFETY (each call): the caller's guarantees, for a sub-range of tokens.
                    unsafe {
                        if take == 8 {
                            tile8::<B, R>(w, std::array::from_fn(|i| at[i]), nb, o, stride)
                        } else if take == $t {
                            tile::<B, R, $t>(w, std::array::from_fn(|i| at[i]), nb, o, stride)
                        } else if take == 4 {
                            tile::<B, R, 4>(w, std::array::from_fn(|i| at[i]), nb, o, stride)
                        } else if take == 3 {
                            tile::<B, R, 3>(w, [at[0], at[1], at[2]], nb, o, stride)
                        } else if take == 2 {
                            tile::<B, R, 2>(w, [at[0], at[1]], nb, o, stride)
                        } else {
                            tile::<B, R, 1>(w, [at[0]], nb, o, stride)
                        }
                    }
                    t0 += take;
                }
            }

            /// The product of `w` (rows of `nb` blocks, back to back) with the activation rows
            /// `a` into `out[t·stride + r]`: rows in groups of `$r`, the rest one at a time.
            ///
            /// # Safety
            /// The CPU must have `$features`; `w.len()` is a multiple of `nb`, every `a[t]`
            /// has `nb` blocks, and `out` holds `(a.len() − 1)·stride + rows` values.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn gemm<B: TileBlock>(
                w: &[B],
                nb: usize,
                a: &[&[BlockQ8K]],
                out: &mut [f32],
                stride: usize,
            ) {
                let mut rows = w.chunks_exact(nb);
                let mut r0 = 0;
                // SAFETY (both calls): the caller's guarantees, for a sub-range of rows.
                // One token: rows one at a time, a single stream through memory as `vec_dot`
                // reads it (pairs of rows read from DRAM measured 2-3x slower).
                while a.len() > 1 && rows.len() >= $r {
                    let group: [&[B]; $r] = std::array::from_fn(|_| rows.next().expect("len"));
                    unsafe { tokens(group, a, nb, &mut out[r0..], stride) };
                    r0 += $r;
                }
                for row in rows {
                    unsafe { tokens([row], a, nb, &mut out[r0..], stride) };
                    r0 += 1;
                }
            }
        }
    };
}

tiles!(avx2, "avx2,fma,f16c", decode256, lanes256, Codes, 1, 8);
tiles!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    decode512,
    lanes_avx512,
    Pairs,
    2,
    8
);
tiles!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    decode512,
    lanes_vnni,
    Pairs,
    2,
    8
);
