//! x86-64 tiles of the quantized product (`quant::gemm`) for the 32-weight types with signed
//! codes and an f16 scale (Q8_0, Q4_0, Q5_0, IQ4_NL) against Q8_0, on AVX2 and AVX-512 VNNI:
//! `R` weight rows × `T` activation rows at a time.
//!
//! Bit-exactness with `vec_dot` needs its float structure kept per (row, token): on these two
//! ISAs it adds the block terms `(d_w·d_a)·Σc·q` of each group of four blocks into four f32
//! lanes (lane `i` takes blocks `4g + i`), sums the lanes (`hsum_f32`), then adds the left-over
//! blocks' terms one by one. The tile keeps one such 4-lane accumulator per (row, token) and
//! computes the same terms; only the integer part is organized differently (exact either way):
//!
//! - VNNI: activations enter `vpdpbusd` as unsigned `q + 128` (one `xor` per token and block,
//!   shared by the `R` rows), weights as the signed operand, and the accumulator starts at
//!   `−128·Σc` per lane (once per row and block, shared by the `T` tokens), so each (row,
//!   token, block) is one `vpdpbusd`: `Σ (q+128)·c − 128·Σ c = Σ q·c`.
//! - AVX2: `|c|` once per row and block; per token `pmaddubsw(|c|, sign(q, c))` + `pmaddwd`,
//!   as `vec_dot` (pairs `≤ 2·128·127 < 2^15`).
//!
//! (AVX-512 BW's `vec_dot` adds eight lanes over groups of eight blocks; that ISA keeps the
//! per-row path.)

use super::x86::{act_codes, codes, hsum_f32, hsum_i32, reduce4};
use super::{scalar::term, Block32, Scale};
use crate::quant::BlockQ8_0;
use std::arch::x86_64::*;

/// A weight block type this tile takes: signed codes, an f16 scale, no offset, Q8_0
/// activations.
pub(super) trait TileBlock: Block32<Act = BlockQ8_0> {}
impl<B: Block32<Act = BlockQ8_0>> TileBlock for B {}

/// Four f16 scales as f32 lanes (exact).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn f16x4(h: [u16; 4]) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi64_si128(
        (h[0] as u64 | (h[1] as u64) << 16 | (h[2] as u64) << 32 | (h[3] as u64) << 48) as i64,
    ))
}

/// One block's 8 i32 lanes for row `r`, token `t`: their sum is the exact `Σ c·q`.
/// `c`: the codes (VNNI) or `|c|` (AVX2); `x`: `−128·Σc` lanes (VNNI) or the signed codes
/// (AVX2); `q`: the activations, `q + 128` for VNNI.
macro_rules! block_lanes {
    (vnni, $c:expr, $x:expr, $q:expr) => {
        _mm256_dpbusd_epi32($x, $q, $c)
    };
    (avx2, $c:expr, $x:expr, $q:expr) => {
        _mm256_madd_epi16(
            _mm256_maddubs_epi16($c, _mm256_sign_epi8($q, $x)),
            _mm256_set1_epi16(1),
        )
    };
}

/// Per row and block: `(c, −128·Σc lanes)` (VNNI) or `(|c|, c)` (AVX2) from the codes `c`.
macro_rules! prep {
    (vnni, $c:expr) => {{
        let c = $c;
        let sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), c);
        (
            c,
            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(sum)),
        )
    }};
    (avx2, $c:expr) => {{
        let c = $c;
        (_mm256_sign_epi8(c, c), c)
    }};
}

/// Per token and block: the activations, as `q + 128` for VNNI.
macro_rules! act {
    (vnni, $q:expr) => {
        _mm256_xor_si256($q, _mm256_set1_epi8(-128))
    };
    (avx2, $q:expr) => {
        $q
    };
}

/// One ISA's tile and driver.
macro_rules! tiles {
    ($isa:ident, $features:literal, $r:literal, $t:literal) => {
        pub(crate) mod $isa {
            use super::*;

            /// Per row: the two vectors `block_lanes!` takes for block `b`.
            #[target_feature(enable = $features)]
            #[inline]
            fn prep<B: TileBlock>(w: &B) -> (__m256i, __m256i) {
                prep!($isa, codes(w))
            }

            /// An activation block as `block_lanes!` takes it.
            #[target_feature(enable = $features)]
            #[inline]
            fn act(a: &BlockQ8_0) -> __m256i {
                act!($isa, act_codes(a))
            }

            /// `out[t·stride + r] = Σ w_r·a_t` for the `R` rows and `T` activation rows.
            #[target_feature(enable = $features)]
            fn tile<B: TileBlock, const R: usize, const T: usize>(
                w: [&[B]; R],
                a: [&[BlockQ8_0]; T],
                out: &mut [f32],
                stride: usize,
            ) {
                let nb = a[0].len();
                let zero = _mm256_setzero_si256();
                let mut acc = [[_mm_setzero_ps(); T]; R];
                let mut g = 0;
                while g + 4 <= nb {
                    let (mut c, mut x) = ([[zero; 4]; R], [[zero; 4]; R]);
                    let mut dw = [_mm_setzero_ps(); R];
                    for r in 0..R {
                        for j in 0..4 {
                            (c[r][j], x[r][j]) = prep(&w[r][g + j]);
                        }
                        let wr = &w[r][g..g + 4];
                        dw[r] = f16x4([
                            wr[0].scale_bits(),
                            wr[1].scale_bits(),
                            wr[2].scale_bits(),
                            wr[3].scale_bits(),
                        ]);
                    }
                    for t in 0..T {
                        let q = [
                            act(&a[t][g]),
                            act(&a[t][g + 1]),
                            act(&a[t][g + 2]),
                            act(&a[t][g + 3]),
                        ];
                        let at = &a[t][g..g + 4];
                        let da = f16x4([
                            u16::from_le_bytes(at[0].d),
                            u16::from_le_bytes(at[1].d),
                            u16::from_le_bytes(at[2].d),
                            u16::from_le_bytes(at[3].d),
                        ]);
                        for r in 0..R {
                            let s = reduce4(
                                block_lanes!($isa, c[r][0], x[r][0], q[0]),
                                block_lanes!($isa, c[r][1], x[r][1], q[1]),
                                block_lanes!($isa, c[r][2], x[r][2], q[2]),
                                block_lanes!($isa, c[r][3], x[r][3], q[3]),
                            );
                            // `vec_dot`'s `terms4`: (d_w·d_a)·s, then the lane add.
                            let t4 = _mm_mul_ps(_mm_mul_ps(dw[r], da), _mm_cvtepi32_ps(s));
                            acc[r][t] = _mm_add_ps(acc[r][t], t4);
                        }
                    }
                    g += 4;
                }
                for r in 0..R {
                    for t in 0..T {
                        let mut sum = hsum_f32(acc[r][t]);
                        for b in g..nb {
                            let (c, x) = prep(&w[r][b]);
                            let p = block_lanes!($isa, c, x, act(&a[t][b]));
                            sum += term(&w[r][b], &a[t][b], hsum_i32(p));
                        }
                        out[t * stride + r] = sum;
                    }
                }
            }

            /// The product of `w` (rows of `nb` blocks, back to back) with the activation rows
            /// `a` into `out[t·stride + r]`: tiles of `$r` rows × `$t` tokens, then the rest.
            ///
            /// # Safety
            /// The CPU must have `$features`; `w.len()` is a multiple of `nb`, every `a[t]`
            /// has `nb` blocks, and `out` holds `(a.len() − 1)·stride + rows` values.
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn gemm<B: TileBlock>(
                w: &[B],
                nb: usize,
                a: &[&[BlockQ8_0]],
                out: &mut [f32],
                stride: usize,
            ) {
                debug_assert!(B::SCALE == Scale::F16 && !B::HAS_MIN);
                // Row r of the weights (no list of rows: the product allocates nothing).
                let row = |r: usize| &w[r * nb..(r + 1) * nb];
                let n_rows = if nb == 0 { 0 } else { w.len() / nb };
                let mut r0 = 0;
                while r0 < n_rows {
                    let rr = if n_rows - r0 >= $r { $r } else { 1 };
                    let mut t0 = 0;
                    while t0 < a.len() {
                        let tt = if a.len() - t0 >= $t { $t } else { 1 };
                        let o = &mut out[t0 * stride + r0..];
                        match (rr, tt) {
                            (1, 1) => tile::<B, 1, 1>([row(r0)], [a[t0]], o, stride),
                            (1, _) => tile::<B, 1, $t>(
                                [row(r0)],
                                std::array::from_fn(|i| a[t0 + i]),
                                o,
                                stride,
                            ),
                            (_, 1) => tile::<B, $r, 1>(
                                std::array::from_fn(|i| row(r0 + i)),
                                [a[t0]],
                                o,
                                stride,
                            ),
                            _ => tile::<B, $r, $t>(
                                std::array::from_fn(|i| row(r0 + i)),
                                std::array::from_fn(|i| a[t0 + i]),
                                o,
                                stride,
                            ),
                        }
                        t0 += tt;
                    }
                    r0 += rr;
                }
            }
        }
    };
}

tiles!(avx2, "avx2,fma,f16c", 4, 2);
tiles!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    4,
    4
);
