//! Q2_K … Q6_K and IQ4_XS rows against Q8_K activations.
//!
//! Per 256-weight super-block every path computes the same exact integers, then the same f32
//! expression, in llama.cpp's form (`ggml_vec_dot_q4_K_q8_K` and siblings):
//!
//! ```text
//! isum  = Σ_s sc_s · Σ_{i∈s} q_i·a_i          (i32, exact: |isum| < 2^28)
//! summs = Σ_s m_s · Σ_{i∈s} a_i               (i32, from Q8_K's `bsums`; types with offsets)
//! acc  += (d_a·d_w)·isum − (d_a·dmin_w)·summs  (f32, block by block)
//! ```
//!
//! with `q` the signed code, `sc`/`m` the sub-block scale/offset and `a` the Q8_K codes. The
//! SIMD paths reduce each block's integers to one i32 before the float step, so every path
//! returns the scalar reference's value bit for bit (tested in `tests/dot_simd_kquants.rs`);
//! llama.cpp keeps per-lane float sums instead, so it differs from us by f32 rounding only.
//!
//! The SIMD paths use unsigned codes `u = q + off` where the code is signed (Q3_K: `off` = 4,
//! Q6_K: 32), as `pmaddubsw`/`vpdpbusd` want, and take the offset back out exactly as
//! `off·Σ_s sc_s·bsum_s`. IQ4_XS's code-book values are signed, so the x86 paths multiply
//! `|k|` by `a·sign(k)`; that needs `a ≠ −128`, which Q8_K guarantees (its quantizer maps the
//! largest magnitude to ∓127 and everything else inside [−127, 127]).
//!
//! Files: this one (dispatch, scale unpacking, scalar reference), `x86.rs` (AVX2, AVX-512,
//! AVX-512 VNNI), `neon.rs` (AArch64, with and without `sdot`).

#[cfg(target_arch = "x86_64")]
mod gemm_x86;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::cpu::Isa;
use crate::quant::act::BlockQ8K;
use crate::quant::iquants::KVALUES_IQ4NL;
use crate::quant::kquants::scale_min_k4;
use crate::quant::{
    BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QuantType, QuantizedActs, QK_K,
};

/// Picks the path for `isa` (which `vec_dot` has checked is available).
macro_rules! dispatch {
    ($name:ident, $block:ty) => {
        pub(super) fn $name(isa: Isa, w: &[$block], a: &[BlockQ8K]) -> f32 {
            match isa {
                // SAFETY: `vec_dot` only passes an ISA that `Isa::is_available` confirmed,
                // and each path's features are exactly what that check tests.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { x86::avx2::$name(w, a) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { x86::avx512::$name(w, a) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => unsafe { x86::vnni::$name(w, a) },
                #[cfg(target_arch = "aarch64")]
                Isa::Neon => neon::$name(w, a),
                _ => scalar::$name(w, a),
            }
        }
    };
}

dispatch!(q2_k, BlockQ2K);
dispatch!(q3_k, BlockQ3K);
dispatch!(q4_k, BlockQ4K);
dispatch!(q5_k, BlockQ5K);
dispatch!(q6_k, BlockQ6K);
dispatch!(iq4_xs, BlockIQ4XS);

/// The tiled product (`quant::gemm`) where `isa` and `ty` have one (x86: Q4_K, Q5_K, Q6_K on
/// AVX2, AVX-512, AVX-512 VNNI); `false` (nothing written) otherwise. `gemm` has checked the
/// shapes and that `isa` is available; `acts` is not empty.
#[allow(unused_variables)]
pub(super) fn gemm(
    isa: Isa,
    ty: QuantType,
    rows: &[u8],
    acts: &[QuantizedActs],
    out: &mut [f32],
    stride: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !matches!(isa, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni) {
            return false;
        }
        if !matches!(ty, QuantType::Q4K | QuantType::Q5K | QuantType::Q6K) {
            return false;
        }
        super::with_act_blocks(acts, QuantizedActs::q8k, |a| {
            let nb = a[0].len();
            macro_rules! run {
                ($block:ty) => {{
                    let w: &[$block] = super::blocks(rows);
                    // SAFETY: `gemm` checked that `isa` is available (the features each module
                    // enables are what `Isa::is_available` tests), that `rows` is whole rows
                    // of `nb` blocks, every activation row `nb` blocks, and `out`'s length.
                    unsafe {
                        match isa {
                            Isa::Avx2 => gemm_x86::avx2::gemm(w, nb, a, out, stride),
                            Isa::Avx512 => gemm_x86::avx512::gemm(w, nb, a, out, stride),
                            _ => gemm_x86::vnni::gemm(w, nb, a, out, stride),
                        }
                    }
                    true
                }};
            }
            match ty {
                QuantType::Q4K => run!(BlockQ4K),
                QuantType::Q5K => run!(BlockQ5K),
                _ => run!(BlockQ6K),
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[inline(always)]
fn f16(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// One block's float step for the types with offsets (Q2_K, Q4_K, Q5_K), in llama.cpp's form,
/// with the weights' super-scales `d`, `dmin` already converted from f16 (exactly, by any
/// path). Shared by every path so that they round identically.
#[inline(always)]
fn finish_min(acc: f32, a: &BlockQ8K, d: f32, dmin: f32, isum: i32, summs: i32) -> f32 {
    let (dall, dm) = (a.d() * d, a.d() * dmin);
    acc + (dall * isum as f32 - dm * summs as f32)
}

/// One block's float step for the types without offsets (Q3_K, Q6_K, IQ4_XS).
#[inline(always)]
fn finish(acc: f32, a: &BlockQ8K, d: f32, isum: i32) -> f32 {
    acc + a.d() * d * isum as f32
}

/// The 16 bsums of a Q8_K block.
#[inline(always)]
fn bsums(a: &BlockQ8K) -> [i32; 16] {
    std::array::from_fn(|j| a.bsum(j) as i32)
}

/// Q2_K: 16 scales (low nibbles) and `summs = Σ_s m_s·bsum_s` (high nibbles are the offsets).
#[inline(always)]
fn q2k_scales(w: &BlockQ2K, a: &BlockQ8K) -> ([i16; 16], i32) {
    let b = bsums(a);
    let summs = (0..16).map(|s| (w.scales[s] >> 4) as i32 * b[s]).sum();
    (std::array::from_fn(|s| (w.scales[s] & 0x0f) as i16), summs)
}

/// Q3_K's 16 signed 6-bit scales (re-centred by −32).
#[inline(always)]
fn q3k_scales(w: &BlockQ3K) -> [i16; 16] {
    let s = &w.scales;
    std::array::from_fn(|i| {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i16 - 32
    })
}

/// Q4_K/Q5_K: 8 scales and `summs = Σ_s m_s·(bsum_2s + bsum_2s+1)`.
#[inline(always)]
fn k4_scales(scales: &[u8; 12], a: &BlockQ8K) -> ([i16; 8], i32) {
    let b = bsums(a);
    let mut sc = [0i16; 8];
    let mut summs = 0i32;
    for (s, sc) in sc.iter_mut().enumerate() {
        let (d, m) = scale_min_k4(s, scales);
        *sc = d as i16;
        summs += m as i32 * (b[2 * s] + b[2 * s + 1]);
    }
    (sc, summs)
}

/// Q6_K's 16 i8 scales.
#[inline(always)]
fn q6k_scales(w: &BlockQ6K) -> [i16; 16] {
    std::array::from_fn(|s| w.scales[s] as i16)
}

/// IQ4_XS's 8 signed 6-bit scales (`ls − 32`).
#[inline(always)]
fn iq4xs_scales(w: &BlockIQ4XS) -> [i16; 8] {
    let h = u16::from_le_bytes(w.scales_h);
    std::array::from_fn(|s| {
        let ls = ((w.scales_l[s / 2] >> (4 * (s % 2))) & 0x0f) as i16
            | ((((h >> (2 * s)) & 3) as i16) << 4);
        ls - 32
    })
}

/// ggml's 32-bit masks for the 6-bit scale packings.
const M6: u32 = 0x3f3f_3f3f;
const M4: u32 = 0x0f0f_0f0f;
const M2: u32 = 0x0303_0303;

#[inline(always)]
fn le32(s: &[u8; 12], i: usize) -> u32 {
    u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]])
}

/// Q4_K/Q5_K's 12 packed bytes as 8 scales then 8 offsets (what [`scale_min_k4`] gives one at a
/// time), four per 32-bit word: scales/offsets 0..4 are the low 6 bits of words 0/1; 4..8 take
/// word 2's nibbles and the top 2 bits of words 0/1.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn k4_unpack(s: &[u8; 12]) -> [u8; 16] {
    let (u0, u1, u2) = (le32(s, 0), le32(s, 1), le32(s, 2));
    let words = [
        u0 & M6,
        (u2 & M4) | (((u0 >> 6) & M2) << 4),
        u1 & M6,
        ((u2 >> 4) & M4) | (((u1 >> 6) & M2) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Q3_K's 16 packed 6-bit scales (not yet re-centred by −32), four per 32-bit word: low
/// nibbles from words 0/1 (scales 0..8) or their high nibbles (8..16), bits 4..6 from word 2's
/// bit pairs.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn q3k_unpack(s: &[u8; 12]) -> [u8; 16] {
    let (u0, u1, u2) = (le32(s, 0), le32(s, 1), le32(s, 2));
    let words = [
        (u0 & M4) | ((u2 & M2) << 4),
        (u1 & M4) | (((u2 >> 2) & M2) << 4),
        ((u0 >> 4) & M4) | (((u2 >> 4) & M2) << 4),
        ((u1 >> 4) & M4) | (((u2 >> 6) & M2) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// The reference: codes decoded one by one in weight order, exact integer sums per sub-block.
pub(crate) mod scalar {
    use super::*;

    /// `Σ_s sc_s · Σ_{i∈s} q_i·a_i` for sub-blocks of `SUB` weights.
    #[inline(always)]
    fn isum<const SUB: usize>(q: &[i8; QK_K], a: &[i8; QK_K], sc: &[i16]) -> i32 {
        q.chunks_exact(SUB)
            .zip(a.chunks_exact(SUB))
            .zip(sc)
            .map(|((q, a), &sc)| {
                let s: i32 = q.iter().zip(a).map(|(&q, &a)| q as i32 * a as i32).sum();
                sc as i32 * s
            })
            .sum()
    }

    pub(crate) fn q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        for (w, a) in w.iter().zip(a) {
            // Weight 128h + 32j + l is bits 2j..2j+2 of qs[32h + l].
            let q: [i8; QK_K] = std::array::from_fn(|i| {
                let (h, j, l) = (i / 128, (i % 128) / 32, i % 32);
                ((w.qs[32 * h + l] >> (2 * j)) & 3) as i8
            });
            let (sc, summs) = q2k_scales(w, a);
            acc = finish_min(
                acc,
                a,
                f16(w.d),
                f16(w.dmin),
                isum::<16>(&q, &a.qs, &sc),
                summs,
            );
        }
        acc
    }

    pub(crate) fn q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        for (w, a) in w.iter().zip(a) {
            // Low 2 bits as Q2_K; a clear hmask bit (4h + j of hmask[l]) subtracts 4.
            let q: [i8; QK_K] = std::array::from_fn(|i| {
                let (h, j, l) = (i / 128, (i % 128) / 32, i % 32);
                let low = ((w.qs[32 * h + l] >> (2 * j)) & 3) as i8;
                let high = (w.hmask[l] >> (4 * h + j)) & 1;
                low - if high == 0 { 4 } else { 0 }
            });
            acc = finish(acc, a, f16(w.d), isum::<16>(&q, &a.qs, &q3k_scales(w)));
        }
        acc
    }

    /// Q4_K/Q5_K codes: weight 64c + l is the low nibble of qs[32c + l], 64c + 32 + l the
    /// high one; Q5_K's fifth bit is bit 2c (resp. 2c + 1) of qh[l].
    #[inline(always)]
    fn k4_codes(qs: &[u8; 128], qh: Option<&[u8; 32]>) -> [i8; QK_K] {
        std::array::from_fn(|i| {
            let (c, half, l) = (i / 64, (i % 64) / 32, i % 32);
            let low = (qs[32 * c + l] >> (4 * half)) & 0x0f;
            let high = qh.map_or(0, |qh| ((qh[l] >> (2 * c + half)) & 1) << 4);
            (low | high) as i8
        })
    }

    pub(crate) fn q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        for (w, a) in w.iter().zip(a) {
            let q = k4_codes(&w.qs, None);
            let (sc, summs) = k4_scales(&w.scales, a);
            acc = finish_min(
                acc,
                a,
                f16(w.d),
                f16(w.dmin),
                isum::<32>(&q, &a.qs, &sc),
                summs,
            );
        }
        acc
    }

    pub(crate) fn q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        for (w, a) in w.iter().zip(a) {
            let q = k4_codes(&w.qs, Some(&w.qh));
            let (sc, summs) = k4_scales(&w.scales, a);
            acc = finish_min(
                acc,
                a,
                f16(w.d),
                f16(w.dmin),
                isum::<32>(&q, &a.qs, &sc),
                summs,
            );
        }
        acc
    }

    pub(crate) fn q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        for (w, a) in w.iter().zip(a) {
            // Half h, quarter t, l < 32: low nibble t/2 of ql[64h + l + 32(t%2)], high bits
            // 2t..2t+2 of qh[32h + l]; stored +32.
            let q: [i8; QK_K] = std::array::from_fn(|i| {
                let (h, t, l) = (i / 128, (i % 128) / 32, i % 32);
                let lo = (w.ql[64 * h + l + 32 * (t & 1)] >> (4 * (t >> 1))) & 0x0f;
                let hi = (w.qh[32 * h + l] >> (2 * t)) & 3;
                (lo | (hi << 4)) as i8 - 32
            });
            acc = finish(acc, a, f16(w.d), isum::<16>(&q, &a.qs, &q6k_scales(w)));
        }
        acc
    }

    pub(crate) fn iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
        let mut acc = 0.0f32;
        for (w, a) in w.iter().zip(a) {
            // Sub-block s: byte j of qs[16s..] holds weight j (low nibble) and j + 16 (high).
            let q: [i8; QK_K] = std::array::from_fn(|i| {
                let (s, j) = (i / 32, i % 32);
                let byte = w.qs[16 * s + j % 16];
                KVALUES_IQ4NL[((byte >> (4 * (j / 16))) & 0x0f) as usize]
            });
            acc = finish(acc, a, f16(w.d), isum::<32>(&q, &a.qs, &iq4xs_scales(w)));
        }
        acc
    }
}
