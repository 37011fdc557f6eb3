//! F32, F16 and BF16 rows against f32 activations (float weights are not paired with
//! quantized activations: the safetensors path stays as exact as transformers').
//!
//! Every weight converts to f32 exactly (F16 with `vcvtph2ps`/`fcvtl`, BF16 by a 16-bit left
//! shift), so the paths differ from the scalar reference only in the order of the f32 sums:
//! the SIMD paths keep 4 vector accumulators (32 or 64 lanes) and fused multiply-adds, and
//! sum the lanes at the end. Rows that are not a whole number of vector steps finish with the
//! scalar loop.

use crate::cpu::Isa;
use crate::quant::{as_blocks, BlockBF16, BlockF16, BlockF32, QuantBlock};

/// Picks the path for `isa` (which `vec_dot` has checked is available).
macro_rules! dispatch {
    ($name:ident, $block:ty) => {
        pub(super) fn $name(isa: Isa, row: &[u8], x: &[f32]) -> f32 {
            debug_assert_eq!(row.len(), x.len() * size_of::<$block>());
            match isa {
                // SAFETY: `vec_dot` only passes an ISA that `Isa::is_available` confirmed, and
                // the row holds `x.len()` weights (checked there).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { x86::avx2::$name(row, x) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx512Vnni => unsafe { x86::avx512::$name(row, x) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: as above; NEON is baseline on AArch64.
                Isa::Neon => unsafe { neon::$name(row, x) },
                _ => scalar::<$block>(row, x),
            }
        }
    };
}

dispatch!(f32, BlockF32);
dispatch!(f16, BlockF16);
dispatch!(bf16, BlockBF16);

/// The reference: one weight at a time, summed in order.
fn scalar<B: QuantBlock>(row: &[u8], x: &[f32]) -> f32 {
    // OK because `vec_dot` checked the length.
    let w: &[B] = as_blocks(row).expect("row length checked");
    w.iter()
        .zip(x.chunks_exact(B::BLOCK_SIZE))
        .map(|(b, x)| b.vec_dot(x))
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::scalar;
    use crate::quant::{BlockBF16, BlockF16, BlockF32};
    use std::arch::x86_64::*;

    /// `Σ w·x` with `$lanes`-wide vectors: `$load(p)` converts `$lanes` weights at byte
    /// pointer `p`; four accumulators hide the FMA latency.
    macro_rules! dot {
        ($name:ident, $block:ty, $features:literal, $lanes:literal, $vec:ty,
         $zero:ident, $loadx:ident, $fmadd:ident, $add:ident, $hsum:ident, |$p:ident| $load:expr) => {
            /// # Safety
            /// The CPU must have the features this function enables; `row` must hold
            /// `x.len()` weights.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn $name(row: &[u8], x: &[f32]) -> f32 {
                const STEP: usize = 4 * $lanes;
                let bytes = size_of::<$block>();
                let n = x.len();
                let main = n - n % STEP;
                let mut acc: [$vec; 4] = [$zero(); 4];
                let (w, xp) = (row.as_ptr(), x.as_ptr());
                let mut i = 0;
                while i < main {
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let j = i + k * $lanes;
                        // SAFETY: j + $lanes ≤ n: the row has bytes for weights j..j+$lanes and
                        // `x` the values; the loads are unaligned.
                        let $p = w.add(j * bytes);
                        *acc = $fmadd($load, $loadx(xp.add(j)), *acc);
                    }
                    i += STEP;
                }
                let v = $add($add(acc[0], acc[1]), $add(acc[2], acc[3]));
                $hsum(v) + scalar::<$block>(&row[main * bytes..], &x[main..])
            }
        };
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn hsum512(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }

    pub(crate) mod avx2 {
        use super::*;
        dot!(
            f32,
            BlockF32,
            "avx2,fma,f16c",
            8,
            __m256,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            hsum256,
            |p| _mm256_loadu_ps(p.cast())
        );
        dot!(
            f16,
            BlockF16,
            "avx2,fma,f16c",
            8,
            __m256,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            hsum256,
            |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
        );
        // BF16 is the top half of an f32: widen to 32 bits and shift into place.
        dot!(
            bf16,
            BlockBF16,
            "avx2,fma,f16c",
            8,
            __m256,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps,
            hsum256,
            |p| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast())
            )))
        );
    }

    pub(crate) mod avx512 {
        use super::*;
        dot!(
            f32,
            BlockF32,
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
            16,
            __m512,
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            hsum512,
            |p| _mm512_loadu_ps(p.cast())
        );
        dot!(
            f16,
            BlockF16,
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
            16,
            __m512,
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            hsum512,
            |p| _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
        );
        dot!(
            bf16,
            BlockBF16,
            "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
            16,
            __m512,
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_fmadd_ps,
            _mm512_add_ps,
            hsum512,
            |p| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_loadu_si256(p.cast())
            )))
        );
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::scalar;
    use crate::quant::{BlockBF16, BlockF16, BlockF32};
    use std::arch::aarch64::*;

    /// Four f16 (IEEE binary16) to f32 with `fcvtl`: exact, base ARMv8 (the f16 vector types
    /// of `vcvt_f32_f16` are newer than this crate's minimum Rust).
    #[inline(always)]
    unsafe fn f16x4(h: uint16x4_t) -> float32x4_t {
        let out: float32x4_t;
        // SAFETY: register-only conversion, present on every AArch64 CPU.
        unsafe {
            std::arch::asm!(
                "fcvtl {o:v}.4s, {i:v}.4h",
                o = lateout(vreg) out,
                i = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }

    /// `Σ w·x`, 16 weights per step (four `float32x4_t` accumulators); `$load(p)` converts
    /// the 16 weights at byte pointer `p` into four vectors.
    macro_rules! dot {
        ($name:ident, $block:ty, |$p:ident| $load:expr) => {
            /// # Safety
            /// `row` must hold `x.len()` weights.
            pub(crate) unsafe fn $name(row: &[u8], x: &[f32]) -> f32 {
                const STEP: usize = 16;
                let bytes = size_of::<$block>();
                let n = x.len();
                let main = n - n % STEP;
                let mut acc = [vdupq_n_f32(0.0); 4];
                let (w, xp) = (row.as_ptr(), x.as_ptr());
                let mut i = 0;
                while i < main {
                    // SAFETY: i + 16 ≤ n: the row has bytes for weights i..i+16 and `x` the
                    // values; byte loads (`ld1 .16b`) have no alignment requirement.
                    let $p = w.add(i * bytes);
                    let wv: [float32x4_t; 4] = $load;
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let xv = vreinterpretq_f32_u8(vld1q_u8(xp.add(i + 4 * k).cast()));
                        *acc = vfmaq_f32(*acc, wv[k], xv);
                    }
                    i += STEP;
                }
                let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
                vaddvq_f32(v) + scalar::<$block>(&row[main * bytes..], &x[main..])
            }
        };
    }

    dot!(f32, BlockF32, |p| std::array::from_fn(|k| {
        vreinterpretq_f32_u8(vld1q_u8(p.add(16 * k)))
    }));
    dot!(f16, BlockF16, |p| {
        let (a, b) = (
            vreinterpretq_u16_u8(vld1q_u8(p)),
            vreinterpretq_u16_u8(vld1q_u8(p.add(16))),
        );
        [
            f16x4(vget_low_u16(a)),
            f16x4(vget_high_u16(a)),
            f16x4(vget_low_u16(b)),
            f16x4(vget_high_u16(b)),
        ]
    });
    // BF16 is the top half of an f32: widen with a 16-bit left shift (`shll`).
    dot!(bf16, BlockBF16, |p| {
        let (a, b) = (
            vreinterpretq_u16_u8(vld1q_u8(p)),
            vreinterpretq_u16_u8(vld1q_u8(p.add(16))),
        );
        [
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(a))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(a)),
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(b))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(b)),
        ]
    });
}
