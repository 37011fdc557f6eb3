//! AArch64 paths: codes decoded to signed bytes (16 per vector, in weight order), then
//! 16-byte dot products: `sdot` where the CPU has the dot-product extension (checked at run
//! time), else `smull` + pairwise widening adds. Per four sub-blocks the partial sums are
//! folded with `addp` and multiplied by the scales in one `mla`.
//!
//! NEON codes are signed (`smull`/`sdot` take i8 × i8), so unlike the x86 paths no offset has to
//! be taken back out; the integers, and so the results, are the same as the scalar reference's.

use super::{f16, finish, finish_min, iq4xs_scales, k4_scales, q2k_scales, q3k_scales, q6k_scales};
use crate::quant::act::BlockQ8K;
use crate::quant::iquants::KVALUES_IQ4NL;
use crate::quant::{BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
use std::arch::aarch64::*;

/// One super-block's signed codes: vector `v` holds weights `16v..16v+16`.
type Codes = [int8x16_t; 16];

/// `acc + ` four-lane partial sums of `w·a` (16 products).
trait Dot16 {
    /// # Safety
    /// The CPU must have the instructions the implementation uses.
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t;
}

/// `sdot` (ARMv8.2 dot-product extension).
struct Sdot;
impl Dot16 for Sdot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        // `vdotq_s32` is not stable in Rust yet; this is the same single instruction.
        // SAFETY: register-only arithmetic; the caller guarantees the CPU has `dotprod`.
        unsafe {
            std::arch::asm!(
                ".arch_extension dotprod",
                "sdot {acc:v}.4s, {w:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                w = in(vreg) w,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }
}

/// Plain NEON: i8 × i8 → i16 (`smull`, exact), then pairwise widening adds into i32.
struct Smull;
impl Dot16 for Smull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(w), vget_low_s8(a));
        let hi = vmull_high_s8(w, a);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

/// Loads 16 bytes at `p + off` (any alignment).
#[inline(always)]
unsafe fn ld(p: &[u8], off: usize) -> uint8x16_t {
    debug_assert!(off + 16 <= p.len());
    vld1q_u8(p.as_ptr().add(off))
}

/// Shifts each byte right by `n` (run-time count: `ushl` by −n).
#[inline(always)]
unsafe fn shr(x: uint8x16_t, n: usize) -> uint8x16_t {
    vshlq_u8(x, vdupq_n_s8(-(n as i8)))
}

/// `0xff` in each byte of `x` that has bit `b` set.
#[inline(always)]
unsafe fn bit(x: uint8x16_t, b: usize) -> uint8x16_t {
    vtstq_u8(x, vdupq_n_u8(1u8 << b))
}

#[inline(always)]
unsafe fn s8(x: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(x)
}

/// Q2_K (module docs of `quant::kquants`): weight `128h + 32j + l` is bits `2j..2j+2` of
/// `qs[32h + l]`.
#[inline(always)]
unsafe fn codes_q2k(w: &BlockQ2K) -> Codes {
    let m3 = vdupq_n_u8(3);
    let mut out = [vdupq_n_s8(0); 16];
    for h in 0..2 {
        let (x0, x1) = (ld(&w.qs, 32 * h), ld(&w.qs, 32 * h + 16));
        for j in 0..4 {
            out[8 * h + 2 * j] = s8(vandq_u8(shr(x0, 2 * j), m3));
            out[8 * h + 2 * j + 1] = s8(vandq_u8(shr(x1, 2 * j), m3));
        }
    }
    out
}

/// Q3_K: the 2 low bits as Q2_K, minus 4 unless bit `4h + j` of `hmask[l]` is set.
#[inline(always)]
unsafe fn codes_q3k(w: &BlockQ3K) -> Codes {
    let (m3, four) = (vdupq_n_u8(3), vdupq_n_u8(4));
    let hm = [ld(&w.hmask, 0), ld(&w.hmask, 16)];
    let mut out = [vdupq_n_s8(0); 16];
    for h in 0..2 {
        let x = [ld(&w.qs, 32 * h), ld(&w.qs, 32 * h + 16)];
        for j in 0..4 {
            for half in 0..2 {
                let u = vorrq_u8(
                    vandq_u8(shr(x[half], 2 * j), m3),
                    vandq_u8(bit(hm[half], 4 * h + j), four),
                );
                out[8 * h + 2 * j + half] = vsubq_s8(s8(u), vdupq_n_s8(4));
            }
        }
    }
    out
}

/// Q4_K/Q5_K: weight `64c + l` is the low nibble of `qs[32c + l]`, `64c + 32 + l` the high
/// one; with `qh`, bit `2c` (resp. `2c + 1`) of `qh[l]` adds 16.
#[inline(always)]
unsafe fn codes_k4(qs: &[u8; 128], qh: Option<&[u8; 32]>) -> Codes {
    let m4 = vdupq_n_u8(0x0f);
    let mut out = [vdupq_n_s8(0); 16];
    for c in 0..4 {
        let x = [ld(qs, 32 * c), ld(qs, 32 * c + 16)];
        for half in 0..2 {
            let mut lo = vandq_u8(x[half], m4);
            let mut hi = vshrq_n_u8::<4>(x[half]);
            if let Some(qh) = qh {
                let hb = ld(qh, 16 * half);
                let sixteen = vdupq_n_u8(16);
                lo = vorrq_u8(lo, vandq_u8(bit(hb, 2 * c), sixteen));
                hi = vorrq_u8(hi, vandq_u8(bit(hb, 2 * c + 1), sixteen));
            }
            out[4 * c + half] = s8(lo);
            out[4 * c + 2 + half] = s8(hi);
        }
    }
    out
}

/// Q6_K: half `h`, quarter `t`: low nibble `t / 2` of `ql[64h + 32(t % 2) + l]`, high bits
/// `2t..2t+2` of `qh[32h + l]`; stored +32.
#[inline(always)]
unsafe fn codes_q6k(w: &BlockQ6K) -> Codes {
    let (m4, m3) = (vdupq_n_u8(0x0f), vdupq_n_u8(3));
    let mut out = [vdupq_n_s8(0); 16];
    for h in 0..2 {
        for half in 0..2 {
            let l0 = ld(&w.ql, 64 * h + 16 * half);
            let l1 = ld(&w.ql, 64 * h + 32 + 16 * half);
            let hb = ld(&w.qh, 32 * h + 16 * half);
            let low = [
                vandq_u8(l0, m4),
                vandq_u8(l1, m4),
                vshrq_n_u8::<4>(l0),
                vshrq_n_u8::<4>(l1),
            ];
            for (t, low) in low.into_iter().enumerate() {
                let high = vshlq_n_u8::<4>(vandq_u8(shr(hb, 2 * t), m3));
                out[8 * h + 2 * t + half] = vsubq_s8(s8(vorrq_u8(low, high)), vdupq_n_s8(32));
            }
        }
    }
    out
}

/// IQ4_XS: code-book lookups (`tbl`); sub-block `s`: byte `j` of `qs[16s..]` holds weight `j`
/// (low nibble) and `j + 16` (high nibble).
#[inline(always)]
unsafe fn codes_iq4xs(w: &BlockIQ4XS) -> Codes {
    let table = vld1q_s8(KVALUES_IQ4NL.as_ptr());
    let m4 = vdupq_n_u8(0x0f);
    let mut out = [vdupq_n_s8(0); 16];
    for s in 0..8 {
        let x = ld(&w.qs, 16 * s);
        out[2 * s] = vqtbl1q_s8(table, vandq_u8(x, m4));
        out[2 * s + 1] = vqtbl1q_s8(table, vshrq_n_u8::<4>(x));
    }
    out
}

/// `Σ_s sc_s · Σ_{i∈s} q_i·a_i` over sub-blocks of `16·V` weights (`V` vectors each).
#[inline(always)]
unsafe fn isum<D: Dot16, const V: usize>(q: &Codes, a: &[i8; QK_K], sc: &[i16]) -> i32 {
    let mut acc = vdupq_n_s32(0);
    // Four sub-blocks at a time: partial sums, folded to one i32 per sub-block with `addp`.
    for g in 0..16 / (4 * V) {
        let mut p = [vdupq_n_s32(0); 4];
        for (i, p) in p.iter_mut().enumerate() {
            for v in 0..V {
                let k = (4 * g + i) * V + v;
                *p = D::dot(*p, q[k], vld1q_s8(a.as_ptr().add(16 * k)));
            }
        }
        let sums = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
        let scales = vmovl_s16(vld1_s16(sc.as_ptr().add(4 * g)));
        acc = vmlaq_s32(acc, sums, scales);
    }
    vaddvq_s32(acc)
}

/// The row functions for one `Dot16`.
macro_rules! rows {
    ($mod:ident, $dot:ty, $($features:literal)?) => {
        mod $mod {
            use super::*;

            /// # Safety
            /// The CPU must have the features this function enables.
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
                let mut acc = 0.0f32;
                for (w, a) in w.iter().zip(a) {
                    let (sc, summs) = q2k_scales(w, a);
                    let isum = isum::<$dot, 1>(&codes_q2k(w), &a.qs, &sc);
                    acc = finish_min(acc, a, f16(w.d), f16(w.dmin), isum, summs);
                }
                acc
            }

            /// # Safety
            /// As [`q2_k`].
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
                let mut acc = 0.0f32;
                for (w, a) in w.iter().zip(a) {
                    let isum = isum::<$dot, 1>(&codes_q3k(w), &a.qs, &q3k_scales(w));
                    acc = finish(acc, a, f16(w.d), isum);
                }
                acc
            }

            /// # Safety
            /// As [`q2_k`].
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
                let mut acc = 0.0f32;
                for (w, a) in w.iter().zip(a) {
                    let (sc, summs) = k4_scales(&w.scales, a);
                    let isum = isum::<$dot, 2>(&codes_k4(&w.qs, None), &a.qs, &sc);
                    acc = finish_min(acc, a, f16(w.d), f16(w.dmin), isum, summs);
                }
                acc
            }

            /// # Safety
            /// As [`q2_k`].
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
                let mut acc = 0.0f32;
                for (w, a) in w.iter().zip(a) {
                    let (sc, summs) = k4_scales(&w.scales, a);
                    let isum = isum::<$dot, 2>(&codes_k4(&w.qs, Some(&w.qh)), &a.qs, &sc);
                    acc = finish_min(acc, a, f16(w.d), f16(w.dmin), isum, summs);
                }
                acc
            }

            /// # Safety
            /// As [`q2_k`].
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
                let mut acc = 0.0f32;
                for (w, a) in w.iter().zip(a) {
                    let isum = isum::<$dot, 1>(&codes_q6k(w), &a.qs, &q6k_scales(w));
                    acc = finish(acc, a, f16(w.d), isum);
                }
                acc
            }

            /// # Safety
            /// As [`q2_k`].
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn iq4_xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
                let mut acc = 0.0f32;
                for (w, a) in w.iter().zip(a) {
                    let isum = isum::<$dot, 2>(&codes_iq4xs(w), &a.qs, &iq4xs_scales(w));
                    acc = finish(acc, a, f16(w.d), isum);
                }
                acc
            }
        }
    };
}

rows!(dotprod, Sdot, "dotprod");
rows!(plain, Smull,);

/// Public entry points: `sdot` when the CPU has it.
macro_rules! entry {
    ($($name:ident: $block:ty),*) => {$(
        pub(super) fn $name(w: &[$block], a: &[BlockQ8K]) -> f32 {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                // SAFETY: the CPU has `dotprod` (checked above); NEON is baseline on AArch64.
                unsafe { dotprod::$name(w, a) }
            } else {
                // SAFETY: NEON is baseline on AArch64.
                unsafe { plain::$name(w, a) }
            }
        }
    )*};
}

entry!(q2_k: BlockQ2K, q3_k: BlockQ3K, q4_k: BlockQ4K, q5_k: BlockQ5K, q6_k: BlockQ6K, iq4_xs: BlockIQ4XS);
