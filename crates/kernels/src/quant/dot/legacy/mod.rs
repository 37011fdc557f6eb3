//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and MXFP4 rows against Q8_0 / Q8_1 activations.
//!
//! All seven are 32-weight blocks `w_i = d_w·c_i (+ m_w)` with small integer codes `c_i`
//! ([`Codes`] says how each stores them), against activations `x_i ≈ d_a·q_i`. Per block:
//!
//! ```text
//! Σ w_i·x_i ≈ (d_w·d_a)·Σ c_i·q_i  (+ m_w·s_a   for Q4_1, Q5_1, where s_a = d_a·Σ q_i)
//! ```
//!
//! (llama.cpp's `ggml_vec_dot_q4_0_q8_0` … `ggml_vec_dot_q5_1_q8_1`). `Σ c_i·q_i` is an exact
//! i32 on every path (|c| ≤ 128, |q| ≤ 127: at most 2^19); `d_w·d_a` is exact in f32 (two
//! 11-bit significands, or a power of two for MXFP4's E8M0 scale). So each block's term is
//! one correctly rounded f32 product on every path (plus `m_w·s_a`, which x86 fuses into the
//! add), and paths differ only in how the f32 terms are added up: the scalar reference and
//! NEON add them in block order (NEON's result is bit for bit the scalar one), x86 in 4 or 8
//! vector lanes.
//!
//! Files: `scalar.rs` (the reference), `x86.rs` (AVX2, AVX-512 BW, AVX-512 VNNI), `neon.rs`
//! (AArch64 with `sdot` when the CPU has it). An [`Isa`] this CPU lacks runs the scalar code.

#[cfg(target_arch = "x86_64")]
mod gemm_x86;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::cpu::Isa;
use crate::quant::act::BlockQ8_1;
use crate::quant::fp4::{e8m0_to_f32_half, KVALUES_MXFP4};
use crate::quant::iquants::KVALUES_IQ4NL;
use crate::quant::legacy::QK;
use crate::quant::{
    BlockIQ4NL, BlockMXFP4, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QuantBlock,
    QuantType, QuantizedActs,
};

pub(super) fn q4_0(isa: Isa, w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    dot(isa, w, a)
}

pub(super) fn q4_1(isa: Isa, w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    dot(isa, w, a)
}

pub(super) fn q5_0(isa: Isa, w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    dot(isa, w, a)
}

pub(super) fn q5_1(isa: Isa, w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    dot(isa, w, a)
}

pub(super) fn q8_0(isa: Isa, w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    dot(isa, w, a)
}

pub(super) fn iq4_nl(isa: Isa, w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    dot(isa, w, a)
}

pub(super) fn mxfp4(isa: Isa, w: &[BlockMXFP4], a: &[BlockQ8_0]) -> f32 {
    dot(isa, w, a)
}

/// The tiled product (`quant::gemm`) where `isa` and `ty` have one (x86: Q8_0, Q4_0, Q5_0,
/// IQ4_NL on AVX-512 VNNI, and all but Q8_0 on AVX2, for more than one token except Q8_0 on
/// VNNI), or for one token the per-row code in one call (`one_token`); `false` (nothing
/// written) otherwise. `gemm` has checked
/// the shapes and that `isa` is available; `acts` is not empty.
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
        // Where the per-row loop measured as fast (`cargo bench … qgemm`): Q8_0 on AVX2 (no
        // decoding to share; the tile's reductions cost more than it saves), every type with
        // one token (each row block is decoded once either way), and Q8_0 on VNNI below a
        // whole tile of tokens: the VNNI tile's `−128·Σc` correction per row and block is paid
        // per tile, so with one token it halved decode speed on a Q8_0 DeepSeek-V2-Lite
        // (5.8 against 11.3 tokens/s at 2 threads).
        let per_row = match isa {
            Isa::Avx2 => ty == QuantType::Q8_0 || acts.len() == 1,
            Isa::Avx512Vnni => acts.len() == 1 || (ty == QuantType::Q8_0 && acts.len() < 4),
            _ => true,
        };
        if per_row {
            return acts.len() == 1 && one_token(isa, ty, rows, &acts[0], out);
        }
        if !matches!(
            ty,
            QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q5_0 | QuantType::IQ4NL
        ) {
            return false;
        }
        super::with_act_blocks(acts, QuantizedActs::q8_0, |a| {
            let nb = a[0].len();
            macro_rules! run {
                ($block:ty) => {{
                    let w: &[$block] = super::blocks(rows);
                    // SAFETY: `gemm` checked that `isa` is available (the features each module
                    // enables are what `Isa::is_available` tests), that `rows` is whole rows
                    // of `nb` blocks, every activation row `nb` blocks, and `out`'s length.
                    unsafe {
                        if isa == Isa::Avx2 {
                            gemm_x86::avx2::gemm(w, nb, a, out, stride)
                        } else {
                            gemm_x86::vnni::gemm(w, nb, a, out, stride)
                        }
                    }
                    true
                }};
            }
            match ty {
                QuantType::Q8_0 => run!(BlockQ8_0),
                QuantType::Q4_0 => run!(BlockQ4_0),
                QuantType::Q5_0 => run!(BlockQ5_0),
                _ => run!(BlockIQ4NL),
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One token's product by the per-row code in one call per matrix (`x86::rows_*`), for
/// `isa` in AVX2, AVX-512, AVX-512 VNNI; `false` (nothing written) for other ISAs and types.
/// `out[r]` is row `r`'s value, equal to [`vec_dot`](super::vec_dot)'s.
#[cfg(target_arch = "x86_64")]
fn one_token(isa: Isa, ty: QuantType, rows: &[u8], a: &QuantizedActs, out: &mut [f32]) -> bool {
    macro_rules! run {
        ($block:ty, $acts:ident) => {{
            let w: &[$block] = super::blocks(rows);
            let a = a.$acts();
            let nb = a.len();
            // SAFETY: `gemm` checked that `isa` is available (the features each function
            // enables are what `Isa::is_available` tests), that `rows` is whole rows of `nb`
            // blocks and `out` holds a value per row.
            unsafe {
                match isa {
                    Isa::Avx2 => x86::rows_avx2(w, nb, a, out),
                    Isa::Avx512 => x86::rows_avx512(w, nb, a, out),
                    _ => x86::rows_avx512_vnni(w, nb, a, out),
                }
            }
            true
        }};
    }
    if !matches!(isa, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni) {
        return false;
    }
    match ty {
        QuantType::Q4_0 => run!(BlockQ4_0, q8_0),
        QuantType::Q4_1 => run!(BlockQ4_1, q8_1),
        QuantType::Q5_0 => run!(BlockQ5_0, q8_0),
        QuantType::Q5_1 => run!(BlockQ5_1, q8_1),
        QuantType::Q8_0 => run!(BlockQ8_0, q8_0),
        QuantType::IQ4NL => run!(BlockIQ4NL, q8_0),
        QuantType::MXFP4 => run!(BlockMXFP4, q8_0),
        _ => false,
    }
}

/// `Σ_blocks` of the block terms of `w` (weights) and `a` (as many activation blocks) on
/// `isa`, or on the scalar reference if this CPU cannot run `isa`.
fn dot<B: Block32>(isa: Isa, w: &[B], a: &[B::Act]) -> f32 {
    // `vec_dot` checked the lengths; a mismatch here is a bug in this module's callers.
    assert_eq!(
        w.len(),
        a.len(),
        "{}: weight and activation blocks",
        B::TYPE
    );
    match available(isa) {
        // SAFETY (the three x86 arms): `available` returned this set, so the CPU has the
        // features the function's contract asks for.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_avx2(w, a) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot_avx512(w, a) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::dot_avx512_vnni(w, a) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::dot(w, a),
        _ => scalar::dot(w, a),
    }
}

/// `isa` if this CPU runs it, else [`Isa::Scalar`].
fn available(isa: Isa) -> Isa {
    if isa.is_available() {
        isa
    } else {
        Isa::Scalar
    }
}

/// How a block type stores its 32 codes `c_i` (weight `i` is `d·c_i`, or `d·c_i + m`).
/// Every path decodes from this one description; byte `j` of `qs` always holds weight `j`
/// in its low nibble and weight `j + 16` in its high nibble (for 4-bit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codes {
    /// 4-bit codes minus `offset` (Q4_0: 8; Q4_1: 0, its offset is `m`).
    Nibbles {
        /// Subtracted from every code.
        offset: i8,
    },
    /// 4-bit codes with bit `i` of `qh` as bit 4, minus `offset` (Q5_0: 16; Q5_1: 0).
    Fives {
        /// Subtracted from every code.
        offset: i8,
    },
    /// Signed 8-bit codes (Q8_0): `qs` is 32 bytes.
    Bytes,
    /// 4-bit indices into a table of signed values (IQ4_NL, MXFP4's doubled E2M1).
    Table(&'static [i8; 16]),
}

/// How a block type stores its scale `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scale {
    /// An IEEE half.
    F16,
    /// An E8M0 exponent, read as half its value (MXFP4: see `e8m0_to_f32_half`).
    E8M0Half,
}

/// A 32-weight block with integer codes, paired with the activation format `Act`.
pub(crate) trait Block32: QuantBlock {
    /// The activation blocks it multiplies (Q8_0, or Q8_1 for the types with an offset).
    type Act: ActBlock;
    /// How the codes are stored.
    const CODES: Codes;
    /// How the scale is stored.
    const SCALE: Scale = Scale::F16;
    /// Whether the block has an offset `m` (Q4_1, Q5_1): its term gains `m_w·s_a`.
    const HAS_MIN: bool = false;
    /// The scale's bits (an f16, or the E8M0 byte).
    fn scale_bits(&self) -> u16;
    /// The offset's f16 bits (0 without an offset).
    fn min_bits(&self) -> u16 {
        0
    }
    /// `qs`: 16 bytes of nibbles, or 32 codes for [`Codes::Bytes`].
    fn qs(&self) -> &[u8];
    /// The fifth bits (little-endian u32; only [`Codes::Fives`] has them).
    fn qh(&self) -> u32 {
        0
    }

    /// The scale in f32.
    #[inline]
    fn scale(&self) -> f32 {
        scale_f32(Self::SCALE, self.scale_bits())
    }
}

/// Activation blocks of 32 i8 codes with an f16 scale (and, for Q8_1, an f16 `s = d·Σq`).
pub(crate) trait ActBlock: Copy {
    /// `d`'s f16 bits.
    fn d_bits(&self) -> u16;
    /// `s`'s f16 bits (Q8_1 only; 0 for Q8_0).
    fn s_bits(&self) -> u16;
    /// The 32 codes (in `[-127, 127]`: `act.rs` scales by `amax / 127`).
    fn qs(&self) -> &[i8; QK];
}

/// A stored scale in f32.
#[inline]
fn scale_f32(scale: Scale, bits: u16) -> f32 {
    match scale {
        Scale::F16 => half::f16::from_bits(bits).to_f32(),
        Scale::E8M0Half => e8m0_to_f32_half(bits as u8),
    }
}

#[inline]
fn f16_bits(b: [u8; 2]) -> u16 {
    u16::from_le_bytes(b)
}

impl ActBlock for BlockQ8_0 {
    #[inline]
    fn d_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn s_bits(&self) -> u16 {
        0
    }
    #[inline]
    fn qs(&self) -> &[i8; QK] {
        &self.qs
    }
}

impl ActBlock for BlockQ8_1 {
    #[inline]
    fn d_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn s_bits(&self) -> u16 {
        f16_bits(self.s)
    }
    #[inline]
    fn qs(&self) -> &[i8; QK] {
        &self.qs
    }
}

impl Block32 for BlockQ4_0 {
    type Act = BlockQ8_0;
    const CODES: Codes = Codes::Nibbles { offset: 8 };
    #[inline]
    fn scale_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        &self.qs
    }
}

impl Block32 for BlockQ4_1 {
    type Act = BlockQ8_1;
    const CODES: Codes = Codes::Nibbles { offset: 0 };
    const HAS_MIN: bool = true;
    #[inline]
    fn scale_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn min_bits(&self) -> u16 {
        f16_bits(self.m)
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        &self.qs
    }
}

impl Block32 for BlockQ5_0 {
    type Act = BlockQ8_0;
    const CODES: Codes = Codes::Fives { offset: 16 };
    #[inline]
    fn scale_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        &self.qs
    }
    #[inline]
    fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl Block32 for BlockQ5_1 {
    type Act = BlockQ8_1;
    const CODES: Codes = Codes::Fives { offset: 0 };
    const HAS_MIN: bool = true;
    #[inline]
    fn scale_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn min_bits(&self) -> u16 {
        f16_bits(self.m)
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        &self.qs
    }
    #[inline]
    fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
}

impl Block32 for BlockQ8_0 {
    type Act = BlockQ8_0;
    const CODES: Codes = Codes::Bytes;
    #[inline]
    fn scale_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid
        // for both; the slice borrows `self.qs` for `self`'s lifetime.
        unsafe { std::slice::from_raw_parts(self.qs.as_ptr().cast::<u8>(), QK) }
    }
}

impl Block32 for BlockIQ4NL {
    type Act = BlockQ8_0;
    const CODES: Codes = Codes::Table(&KVALUES_IQ4NL);
    #[inline]
    fn scale_bits(&self) -> u16 {
        f16_bits(self.d)
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        &self.qs
    }
}

impl Block32 for BlockMXFP4 {
    type Act = BlockQ8_0;
    const CODES: Codes = Codes::Table(&KVALUES_MXFP4);
    const SCALE: Scale = Scale::E8M0Half;
    #[inline]
    fn scale_bits(&self) -> u16 {
        self.e[0] as u16
    }
    #[inline]
    fn qs(&self) -> &[u8] {
        &self.qs
    }
}
