//! AArch64 path: 16-byte registers, two per block (weights 0..16 and 16..32).
//!
//! With the `dotprod` extension (`sdot`: four i8·i8 products into each i32 lane; detected at
//! run time, emitted with `asm!` because its intrinsic `vdotq_s32` is not stable Rust yet), a
//! block is two `sdot`s; without it, `smull` into i16 (|c·q| ≤ 128·127 fits) and `sadalp`
//! (pairwise add into i32). Both leave the exact `Σ c_i·q_i` after an across-lanes add.
//! Two blocks per iteration, as independent chains; their terms are added in block order, as
//! the scalar reference does.

use std::arch::aarch64::*;
use std::sync::OnceLock;

use super::scalar::term;
use super::{ActBlock, Block32, Codes};

/// A block's codes: weights 0..16, 16..32.
#[inline]
#[target_feature(enable = "neon")]
fn codes<B: Block32>(w: &B) -> (int8x16_t, int8x16_t) {
    let qs = w.qs();
    let nibbles = || {
        assert!(qs.len() >= 16);
        // SAFETY: `qs` has at least 16 readable bytes (asserted); NEON loads are unaligned.
        let q = unsafe { vld1q_u8(qs.as_ptr()) };
        (vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q))
    };
    match B::CODES {
        Codes::Bytes => {
            assert!(qs.len() >= 32);
            // SAFETY: `qs` has 32 readable bytes (asserted).
            unsafe {
                (
                    vld1q_s8(qs.as_ptr().cast()),
                    vld1q_s8(qs.as_ptr().add(16).cast()),
                )
            }
        }
        Codes::Nibbles { offset } => {
            let (lo, hi) = nibbles();
            let o = vdupq_n_s8(offset);
            (
                vsubq_s8(vreinterpretq_s8_u8(lo), o),
                vsubq_s8(vreinterpretq_s8_u8(hi), o),
            )
        }
        Codes::Fives { offset } => {
            let (lo, hi) = nibbles();
            let qh = w.qh().to_le_bytes();
            // Byte i gets 0x10 if bit i of qh is set: bytes 0..8 test qh's byte 0, and so on.
            let bit = vcombine_u8(
                vcreate_u8(0x8040_2010_0804_0201),
                vcreate_u8(0x8040_2010_0804_0201),
            );
            let fifth = |b0: u8, b1: u8| {
                let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
                vandq_u8(vtstq_u8(v, bit), vdupq_n_u8(0x10))
            };
            let o = vdupq_n_s8(offset);
            (
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, fifth(qh[0], qh[1]))), o),
                vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(hi, fifth(qh[2], qh[3]))), o),
            )
        }
        Codes::Table(t) => {
            // SAFETY: the table is 16 readable bytes.
            let table = unsafe { vld1q_s8(t.as_ptr()) };
            let (lo, hi) = nibbles();
            (vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi))
        }
    }
}

/// An activation block's codes: 0..16, 16..32.
#[inline]
#[target_feature(enable = "neon")]
fn act_codes<A: ActBlock>(a: &A) -> (int8x16_t, int8x16_t) {
    let q = a.qs();
    // SAFETY: `q` is 32 readable bytes.
    unsafe { (vld1q_s8(q.as_ptr()), vld1q_s8(q.as_ptr().add(16))) }
}

/// `acc + Σ` of each four products `a_j·b_j` per i32 lane: the `sdot` instruction.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` only reads and writes the named vector registers; the `dotprod`
    // feature is enabled on this function, whose callers checked the CPU has it.
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `Σ c_i·q_i` of a block, with `sdot`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn block_sum_dotprod<B: Block32>(w: &B, a: &B::Act) -> i32 {
    let ((c0, c1), (q0, q1)) = (codes(w), act_codes(a));
    vaddvq_s32(sdot(sdot(vdupq_n_s32(0), c0, q0), c1, q1))
}

/// `Σ c_i·q_i` of a block, with widening multiplies.
#[inline]
#[target_feature(enable = "neon")]
fn block_sum_mull<B: Block32>(w: &B, a: &B::Act) -> i32 {
    let ((c0, c1), (q0, q1)) = (codes(w), act_codes(a));
    let mut acc = vdupq_n_s32(0);
    for (c, q) in [(c0, q0), (c1, q1)] {
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(c), vget_low_s8(q)));
        acc = vpadalq_s16(acc, vmull_high_s8(c, q));
    }
    vaddvq_s32(acc)
}

#[target_feature(enable = "neon,dotprod")]
fn dot_dotprod<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    let mut sum = 0.0f32;
    let (w2, a2) = (w.chunks_exact(2), a.chunks_exact(2));
    let (wr, ar) = (w2.remainder(), a2.remainder());
    for (w, a) in w2.zip(a2) {
        let s0 = block_sum_dotprod(&w[0], &a[0]);
        let s1 = block_sum_dotprod(&w[1], &a[1]);
        sum += term(&w[0], &a[0], s0);
        sum += term(&w[1], &a[1], s1);
    }
    for (w, a) in wr.iter().zip(ar) {
        sum += term(w, a, block_sum_dotprod(w, a));
    }
    sum
}

#[target_feature(enable = "neon")]
fn dot_mull<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    let mut sum = 0.0f32;
    let (w2, a2) = (w.chunks_exact(2), a.chunks_exact(2));
    let (wr, ar) = (w2.remainder(), a2.remainder());
    for (w, a) in w2.zip(a2) {
        let s0 = block_sum_mull(&w[0], &a[0]);
        let s1 = block_sum_mull(&w[1], &a[1]);
        sum += term(&w[0], &a[0], s0);
        sum += term(&w[1], &a[1], s1);
    }
    for (w, a) in wr.iter().zip(ar) {
        sum += term(w, a, block_sum_mull(w, a));
    }
    sum
}

/// The NEON path, with `sdot` when the CPU has it.
pub(super) fn dot<B: Block32>(w: &[B], a: &[B::Act]) -> f32 {
    static DOTPROD: OnceLock<bool> = OnceLock::new();
    let dotprod = *DOTPROD.get_or_init(|| std::arch::is_aarch64_feature_detected!("dotprod"));
    if dotprod {
        // SAFETY: the CPU has `dotprod` (detected above) and NEON (every AArch64 CPU).
        unsafe { dot_dotprod(w, a) }
    } else {
        // SAFETY: every AArch64 CPU has NEON.
        unsafe { dot_mull(w, a) }
    }
}
