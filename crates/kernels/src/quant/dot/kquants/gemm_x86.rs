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
//! VNNI: `vpdpbusd` of a code vector with the activations gives eight i32 lanes of 4 products,
//! each inside one sub-block and at most `4·63·127 < 2^15`; two such vectors are packed to i16
//! (`vpackssdw`, exact) and one `vpdpwssd` multiplies them by their sub-blocks' scales and adds
//! them to the accumulator: three multiply-class instructions per 64 weights, where `vec_dot`
//! spends two permutes and two `vpmulld`. AVX2 and AVX-512 BW: `pmaddubsw` (pairs, `≤ 2·63·127`,
//! no saturation) then `pmaddwd` with the scale broadcast to i16 lanes and an add. Q6_K's offset
//! term is folded into the same accumulator as one more `pmaddwd` of the bsums with `−32·sc`.
//!
//! Tiles are 2 rows × 8 tokens (VNNI, AVX-512: 16 accumulators of the 32 vector registers) or
//! 2 × 4 (AVX2, 16 registers): decoding a super-block costs about as much as its dot with
//! one token, so the token count is what amortizes it.
//!
//! The float step is `vec_dot`'s: eight blocks' integer lanes reduced together
//! (`transpose_sum8`), `(d_a·d)·isum − (d_a·dmin)·summs` per block in f32 (no fused
//! multiply-add), the block values added to the row's sum in block order. The integers are
//! exact and the float expression is the same, so every output equals `vec_dot` bit for bit
//! whatever `R`, `T` and however many tokens the caller batches.

use super::x86::isum::{PAIR_K, WORD_K};
use super::x86::{bsums, codes_k4, codes_q6k, f16, k4_vectors, load32, transpose_sum8, Codes};
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

/// `vpackssdw` patterns for the VNNI tile (module docs): pair `c` of code vectors (`2c`,
/// `2c + 1`) packed to i16 holds, per 128-bit half, 4 lanes of vector `2c` then 4 of `2c + 1`.
/// Sub-blocks of 32 (from 8 scales in both halves): words `2c` ×4, `2c + 1` ×4 in both halves.
const PACK_32: [[u8; 32]; 4] = {
    let mut m = [[0u8; 32]; 4];
    let mut c = 0;
    while c < 4 {
        let mut i = 0;
        while i < 32 {
            let word = 2 * c + (i % 16) / 8;
            m[c][i] = (2 * word + i % 2) as u8;
            i += 1;
        }
        c += 1;
    }
    m
};

/// The same for sub-blocks of 16 (Q6_K), from the 8 scales `8(c/2)..` in both halves: the low
/// half takes sub-blocks `4c`, `4c + 2`, the high half `4c + 1`, `4c + 3` (local words
/// `4(c%2) + …`); patterns for `c % 2`.
const PACK_16: [[u8; 32]; 2] = {
    let mut m = [[0u8; 32]; 2];
    let mut c = 0;
    while c < 2 {
        let mut i = 0;
        while i < 32 {
            let word = 4 * c + i / 16 + 2 * ((i % 16) / 8);
            m[c][i] = (2 * word + i % 2) as u8;
            i += 1;
        }
        c += 1;
    }
    m
};

/// One super-block decoded for the tile: unsigned codes `u`, scale vectors `s` (VNNI, `PACK`:
/// `s[c]` for the packed pair `c` < 4; else `s[k]` for code vector `k`), the offset vector
/// `off` (Q4_K/Q5_K: offsets against the 16 bsums; Q6_K: `−32·sc` against them); returns the
/// f32 super-scales `(d, dmin)`. Written into the caller's arrays (no closures or returned
/// aggregates: everything must inline).
///
/// # Safety
/// AVX2, F16C must be available; `B::KIND` must name `B`'s real type.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn decode<B: TileBlock, const PACK: bool>(
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
                let (qs, qh, scales, d, dmin) = if B::KIND == Kind::Q4K {
                    let w = &*(w as *const B).cast::<BlockQ4K>();
                    (&w.qs, None, &w.scales, w.d, w.dmin)
                } else {
                    let w = &*(w as *const B).cast::<BlockQ5K>();
                    (&w.qs, Some(&w.qh), &w.scales, w.d, w.dmin)
                };
                let (sc, m) = k4_vectors(scales);
                *u = codes_k4(qs, qh);
                let sc = _mm256_broadcastsi128_si256(_mm_loadu_si128(sc.as_ptr().cast()));
                if PACK {
                    for c in 0..4 {
                        s[c] = _mm256_shuffle_epi8(sc, load32(PACK_32[c].as_ptr()));
                    }
                } else {
                    // Sub-blocks of 32: code vector k has one scale in every lane.
                    for k in 0..8 {
                        s[k] = _mm256_shuffle_epi8(sc, load32(WORD_K[k].as_ptr()));
                    }
                }
                *off = m;
                (f16(d), f16(dmin))
            }
            Kind::Q6K => {
                let w = &*(w as *const B).cast::<BlockQ6K>();
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.scales.as_ptr().cast()));
                // Scales 0..8 (resp. 8..16) in both halves, for in-lane `pshufb`.
                let halves = [
                    _mm256_permute4x64_epi64::<0b01_00_01_00>(sc),
                    _mm256_permute4x64_epi64::<0b11_10_11_10>(sc),
                ];
                *u = codes_q6k(w);
                if PACK {
                    for c in 0..4 {
                        s[c] = _mm256_shuffle_epi8(halves[c / 2], load32(PACK_16[c % 2].as_ptr()));
                    }
                } else {
                    // Sub-blocks of 16: code vector k takes scale 2k in its low 128-bit half
                    // and 2k + 1 in its high half.
                    for k in 0..8 {
                        s[k] = _mm256_shuffle_epi8(halves[k / 4], load32(PAIR_K[k % 4].as_ptr()));
                    }
                }
                // −32·sc ∈ [−4064, 4096]: fits i16.
                *off = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(sc));
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

/// A block's integer lanes for `R` rows × `T` tokens, VNNI (module docs).
///
/// # Safety
/// The CPU must have AVX-512 VNNI and VL; `a[t]` points at 256 readable bytes.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn lanes_vnni<const R: usize, const T: usize>(
    u: &[Codes; R],
    s: &[[__m256i; 8]; R],
    a: &[*const i8; T],
    lanes: &mut [[__m256i; T]; R],
) {
    let zero = _mm256_setzero_si256();
    for c in 0..4 {
        for t in 0..T {
            // SAFETY: the caller's 256 bytes; this reads bytes 64c..64c+64.
            let (a0, a1) = unsafe {
                (
                    load32(a[t].add(64 * c).cast()),
                    load32(a[t].add(64 * c + 32).cast()),
                )
            };
            for r in 0..R {
                let p0 = _mm256_dpbusd_epi32(zero, u[r][2 * c], a0);
                let p1 = _mm256_dpbusd_epi32(zero, u[r][2 * c + 1], a1);
                let p = _mm256_packs_epi32(p0, p1);
                lanes[r][t] = _mm256_dpwssd_epi32(lanes[r][t], p, s[r][c]);
            }
        }
    }
}

/// The same with `pmaddubsw` + `pmaddwd` (AVX2, AVX-512 BW).
///
/// # Safety
/// The CPU must have AVX2; `a[t]` points at 256 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lanes_avx2<const R: usize, const T: usize>(
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

/// One ISA's tiles and driver: `$r` rows × up to `$t` tokens per tile.
macro_rules! tiles {
    ($isa:ident, $features:literal, $lanes:ident, $pack:literal, $r:literal, $t:literal) => {
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
                let mut u = [[zero; 8]; R];
                let mut s = [[zero; 8]; R];
                let mut off = [zero; R];
                let mut g = 0;
                while g < nb {
                    let m = (nb - g).min(8);
                    for j in 0..m {
                        let b = g + j;
                        for r in 0..R {
                            // SAFETY: the features `decode` needs are enabled here.
                            (dw[r][j], dmw[r][j]) = unsafe {
                                decode::<B, $pack>(&w[r][b], &mut u[r], &mut s[r], &mut off[r])
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
                        if take == $t {
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
                while rows.len() >= $r {
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

tiles!(avx2, "avx2,fma,f16c", lanes_avx2, false, 2, 4);
tiles!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    lanes_avx2,
    false,
    2,
    8
);
tiles!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    lanes_vnni,
    true,
    2,
    8
);
