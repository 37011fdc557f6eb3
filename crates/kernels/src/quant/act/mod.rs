//! Activations quantized for integer dot products: ggml's "vec_dot_type" formats.
//!
//! llama.cpp multiplies a quantized weight row by activations that are themselves quantized
//! to 8 bits, block by block, so that the inner loop is an integer dot product (`vpdpbusd`,
//! `sdot`, `pmaddubsw`) and one float multiply per block. Each weight type has a partner
//! format ([`QuantType::act_format`]):
//!
//! | weights | activations |
//! |---|---|
//! | Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4 | Q8_0: 32 values, f16 scale `d`, `x ≈ d·q` |
//! | Q4_1, Q5_1 | Q8_1: Q8_0 plus `s = d·Σq`, which carries the weights' offset `m` |
//! | Q2_K … Q6_K, IQ4_XS | Q8_K: 256 values, f32 scale, 16-value sums `bsums` for the mins |
//! | F32, F16, BF16 | F32: not quantized |
//!
//! The quantizers here are the scalar references, with llama.cpp's rounding
//! (`quantize_row_q8_0_ref`, `quantize_row_q8_1_ref`, `quantize_row_q8_K_ref` in
//! `ggml-quants.c`): the same activations give the same codes, so our logits differ from
//! llama.cpp's only by float summation order. Q8_0 and Q8_K also have AVX2 (`x86.rs`) and
//! NEON (`neon.rs`) paths, equal to the references byte for byte: the same IEEE products, sums and rounding per value,
//! and the same choice of the value that sets the scale (prefill quantizes a few million values
//! per layer, so the scalar loops showed in profiles).

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::legacy::{BlockQ8_0, QK};
use super::{as_blocks, QuantBlock, QuantError, QuantType, QK_K};
use crate::cpu::Isa;

/// Q8_1: `d: f16, s: f16, qs: [i8; 32]`, `x ≈ d·q`, `s = d·Σq` (36 bytes per 32 values).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_1 {
    /// Scale (f16).
    pub d: [u8; 2],
    /// `d · Σ qs` (f16).
    pub s: [u8; 2],
    /// Codes.
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

/// Q8_K: `d: f32, qs: [i8; 256], bsums: [i16; 16]` (292 bytes per 256 values); `x ≈ d·q`,
/// `bsums[j] = Σ qs[16j .. 16j+16]` (the k-quants' mins are applied through these sums).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    /// Scale (f32, little-endian).
    pub d: [u8; 4],
    /// Codes.
    pub qs: [i8; QK_K],
    /// Sums of each 16 codes (i16, little-endian).
    pub bsums: [[u8; 2]; QK_K / 16],
}
const _: () = assert!(size_of::<BlockQ8K>() == 292);

impl BlockQ8_1 {
    /// The scale.
    #[inline]
    pub fn d(&self) -> f32 {
        half::f16::from_le_bytes(self.d).to_f32()
    }
    /// `d · Σ qs`.
    #[inline]
    pub fn s(&self) -> f32 {
        half::f16::from_le_bytes(self.s).to_f32()
    }
}

impl BlockQ8K {
    /// The scale.
    #[inline]
    pub fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
    /// `Σ qs[16j .. 16j+16]`.
    #[inline]
    pub fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes(self.bsums[j])
    }
}

// SAFETY: repr(C) structs of u8/i8 arrays only: alignment 1, no padding, any bits valid.
unsafe impl QuantBlock for BlockQ8_1 {
    const TYPE: QuantType = QuantType::Q8_1;
    const BLOCK_SIZE: usize = QK;

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d();
        for (o, &q) in out[..QK].iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = self
            .qs
            .iter()
            .zip(&x[..QK])
            .map(|(&q, &x)| q as f32 * x)
            .sum();
        s * self.d()
    }
}

// SAFETY: as above.
unsafe impl QuantBlock for BlockQ8K {
    const TYPE: QuantType = QuantType::Q8K;
    const BLOCK_SIZE: usize = QK_K;

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d();
        for (o, &q) in out[..QK_K].iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }

    fn vec_dot(&self, x: &[f32]) -> f32 {
        let s: f32 = self
            .qs
            .iter()
            .zip(&x[..QK_K])
            .map(|(&q, &x)| q as f32 * x)
            .sum();
        s * self.d()
    }
}

/// The format activations take for a weight type's integer dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// Not quantized (float weights).
    F32,
    /// [`BlockQ8_0`].
    Q8_0,
    /// [`BlockQ8_1`].
    Q8_1,
    /// [`BlockQ8K`].
    Q8K,
}

impl ActFormat {
    /// Values per block (1 for F32).
    pub fn block_size(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 | ActFormat::Q8_1 => QK,
            ActFormat::Q8K => QK_K,
        }
    }
}

impl QuantType {
    /// The activation format of this weight type's dot product (ggml's `vec_dot_type`), or
    /// `None` for types without kernels.
    pub fn act_format(self) -> Option<ActFormat> {
        use QuantType::*;
        Some(match self {
            F32 | F16 | BF16 => ActFormat::F32,
            Q4_0 | Q5_0 | Q8_0 | IQ4NL | MXFP4 => ActFormat::Q8_0,
            Q4_1 | Q5_1 => ActFormat::Q8_1,
            Q2K | Q3K | Q4K | Q5K | Q6K | IQ4XS => ActFormat::Q8K,
            _ => return None,
        })
    }
}

/// One activation vector in an [`ActFormat`], in a buffer reused from call to call (the decode
/// loop quantizes into the same `QuantizedActs` every token: no allocation once it is sized).
/// `clone_from` reuses the destination's buffers too.
#[derive(Debug)]
pub struct QuantizedActs {
    format: ActFormat,
    n: usize,
    /// Blocks of the quantized formats.
    bytes: Vec<u8>,
    /// The values, for [`ActFormat::F32`].
    floats: Vec<f32>,
}

impl Clone for QuantizedActs {
    fn clone(&self) -> Self {
        QuantizedActs {
            format: self.format,
            n: self.n,
            bytes: self.bytes.clone(),
            floats: self.floats.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.format = source.format;
        self.n = source.n;
        self.bytes.clone_from(&source.bytes);
        self.floats.clone_from(&source.floats);
    }
}

impl Default for QuantizedActs {
    fn default() -> Self {
        QuantizedActs::new()
    }
}

impl QuantizedActs {
    /// An empty buffer.
    pub fn new() -> Self {
        QuantizedActs {
            format: ActFormat::F32,
            n: 0,
            bytes: Vec::new(),
            floats: Vec::new(),
        }
    }

    /// `x` quantized to `format`; `x.len()` must be whole blocks of the format.
    pub fn from_f32(format: ActFormat, x: &[f32]) -> Result<Self, QuantError> {
        let mut a = QuantizedActs::new();
        a.quantize(format, x)?;
        Ok(a)
    }

    /// Quantizes `x` into this buffer (reusing its allocation), replacing what it held, on the
    /// best available ISA ([`Isa::detect`]). Errors if `x.len()` is not whole blocks of
    /// `format`.
    pub fn quantize(&mut self, format: ActFormat, x: &[f32]) -> Result<(), QuantError> {
        self.quantize_on(Isa::detect(), format, x)
    }

    /// [`QuantizedActs::quantize`] on `isa` (an unavailable one runs the scalar reference).
    /// Every ISA gives the same bytes.
    pub fn quantize_on(
        &mut self,
        isa: Isa,
        format: ActFormat,
        x: &[f32],
    ) -> Result<(), QuantError> {
        let bs = format.block_size();
        #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85.
        if x.len() % bs != 0 {
            let ty = match format {
                ActFormat::F32 => QuantType::F32,
                ActFormat::Q8_0 => QuantType::Q8_0,
                ActFormat::Q8_1 => QuantType::Q8_1,
                ActFormat::Q8K => QuantType::Q8K,
            };
            return Err(QuantError::NotWholeBlocks {
                ty: ty.name(),
                n: x.len(),
                block_size: bs,
            });
        }
        #[cfg(target_arch = "x86_64")]
        let simd = isa >= Isa::Avx2 && isa.is_available();
        #[cfg(target_arch = "aarch64")]
        let simd = isa == Isa::Neon && isa.is_available();
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = isa;
        self.format = format;
        self.n = x.len();
        self.floats.clear();
        self.bytes.clear();
        match format {
            ActFormat::F32 => self.floats.extend_from_slice(x),
            ActFormat::Q8_0 => {
                self.bytes.resize(x.len() / QK * size_of::<BlockQ8_0>(), 0);
                let out = self.bytes.chunks_exact_mut(size_of::<BlockQ8_0>());
                for (xb, ob) in x.chunks_exact(QK).zip(out) {
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: AVX2 is available (checked above); the block sizes match.
                        unsafe { x86::quantize_q8_0_block(xb, ob) };
                        continue;
                    }
                    #[cfg(target_arch = "aarch64")]
                    if simd {
                        neon::quantize_q8_0_block(xb, ob);
                        continue;
                    }
                    quantize_q8_0_block(xb, ob);
                }
            }
            ActFormat::Q8_1 => {
                for xb in x.chunks_exact(QK) {
                    quantize_q8_1_block(xb, &mut self.bytes);
                }
            }
            ActFormat::Q8K => {
                self.bytes.resize(x.len() / QK_K * size_of::<BlockQ8K>(), 0);
                let out = self.bytes.chunks_exact_mut(size_of::<BlockQ8K>());
                for (xb, ob) in x.chunks_exact(QK_K).zip(out) {
                    #[cfg(target_arch = "x86_64")]
                    if simd {
                        // SAFETY: AVX2 is available (checked above); the block sizes match.
                        unsafe { x86::quantize_q8k_block(xb, ob) };
                        continue;
                    }
                    #[cfg(target_arch = "aarch64")]
                    if simd {
                        neon::quantize_q8k_block(xb, ob);
                        continue;
                    }
                    quantize_q8k_block(xb, ob);
                }
            }
        }
        Ok(())
    }

    /// The format held.
    pub fn format(&self) -> ActFormat {
        self.format
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The blocks' bytes as stored (empty for F32): what llama.cpp's quantizer writes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The values, if the format is F32 (empty otherwise).
    pub fn f32s(&self) -> &[f32] {
        &self.floats
    }

    /// The Q8_0 blocks (empty for another format).
    pub fn q8_0(&self) -> &[BlockQ8_0] {
        self.blocks::<BlockQ8_0>(ActFormat::Q8_0)
    }

    /// The Q8_1 blocks (empty for another format).
    pub fn q8_1(&self) -> &[BlockQ8_1] {
        self.blocks::<BlockQ8_1>(ActFormat::Q8_1)
    }

    /// The Q8_K blocks (empty for another format).
    pub fn q8k(&self) -> &[BlockQ8K] {
        self.blocks::<BlockQ8K>(ActFormat::Q8K)
    }

    fn blocks<B: QuantBlock>(&self, want: ActFormat) -> &[B] {
        if self.format != want {
            return &[];
        }
        // OK because `quantize` writes whole blocks of this format.
        as_blocks::<B>(&self.bytes).expect("whole blocks")
    }
}

/// `amax / 127` as the scale; codes `round(x / d)` (half away from zero, as C's `roundf`).
fn q8_codes(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    (d, q)
}

/// One Q8_0 block (34 bytes) of 32 values.
fn quantize_q8_0_block(x: &[f32], out: &mut [u8]) {
    let (d, q) = q8_codes(x);
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(&q) {
        *o = v as u8;
    }
}

fn quantize_q8_1_block(x: &[f32], out: &mut Vec<u8>) {
    let (d, q) = q8_codes(x);
    let sum: i32 = q.iter().map(|&v| v as i32).sum();
    out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&half::f16::from_f32(sum as f32 * d).to_le_bytes());
    out.extend(q.iter().map(|&v| v as u8));
}

/// Round half to even, as ggml's `nearest_int`, for |v| < 2²²: adding 1.5·2²³ rounds `v` to
/// an integer in the default (nearest-even) mode, and the low 23 mantissa bits then hold it
/// offset by 2²². Equal to `round_ties_even` there, but a plain add where that would be a libm
/// call (`rintf`) per value on baseline x86-64.
#[inline]
fn nearest_int(v: f32) -> i32 {
    debug_assert!(v.abs() < 4_194_304.0, "nearest_int: {v} out of range");
    let f = v + 12_582_912.0;
    (f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Q8_K: the scale is set by the value of largest magnitude (`−127 / max`, sign included), so
/// that value maps to −127 exactly and the rest fall in [−128, 127] (clamped at 127).
fn quantize_q8k_block(x: &[f32], out: &mut [u8]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let mut q = [0i8; QK_K];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    out[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for (o, &v) in out[4..4 + QK_K].iter_mut().zip(&q) {
        *o = v as u8;
    }
    for (o, s) in out[4 + QK_K..].chunks_exact_mut(2).zip(q.chunks_exact(16)) {
        let sum: i16 = s.iter().map(|&v| v as i16).sum();
        o.copy_from_slice(&sum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for i in -2000..=2000 {
            let v = i as f32 * 0.25 - 0.125 * (i % 3) as f32;
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
        for v in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.5, 127.0, 0.0, -0.0,
        ] {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
        }
    }

    /// Each SIMD quantizer gives the scalar reference's bytes, on rows built to hit its
    /// edges: ties on half steps, a repeated maximum of both signs (the first one sets Q8_K's
    /// sign), a negative maximum, zeros, tiny values, and (Q8_0) NaN and infinity.
    #[test]
    fn simd_quantizers_equal_the_reference() {
        let mut rows: Vec<Vec<f32>> = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for scale in [1e-30f32, 1e-3, 1.0, 37.0, 1e20] {
            rows.push((0..512).map(|_| rand() * scale).collect());
        }
        // Ties: every block's maximum is 127 (scale 1) and the other values are k + ½.
        rows.push(
            (0..512)
                .map(|i| {
                    if i % 32 == 0 {
                        127.0
                    } else {
                        (i % 200) as f32 - 100.5
                    }
                })
                .collect(),
        );
        let mut r: Vec<f32> = (0..512).map(|i| (i % 7) as f32 - 3.0).collect();
        r[3] = -9.0;
        r[200] = 9.0;
        r[300] = 9.0;
        r[301] = -9.0;
        rows.push(r);
        rows.push(vec![0.0; 512]);
        rows.push(
            (0..512)
                .map(|i| if i % 2 == 0 { -0.0 } else { 0.0 })
                .collect(),
        );
        let mut r: Vec<f32> = (0..512).map(|i| i as f32 * 0.01).collect();
        r[17] = f32::NAN;
        r[300] = f32::INFINITY;
        rows.push(r);
        for isa in Isa::available() {
            for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
                for (i, x) in rows.iter().enumerate() {
                    // The Q8_K reference's `nearest_int` asserts a finite range (debug builds):
                    // non-finite blocks are checked on the Q8_0/Q8_1 paths only (Q8_K's SIMD
                    // path hands such blocks to the reference anyway).
                    if format == ActFormat::Q8K && x.iter().any(|v| !v.is_finite()) {
                        continue;
                    }
                    let mut want = QuantizedActs::new();
                    want.quantize_on(Isa::Scalar, format, x).unwrap();
                    let mut got = QuantizedActs::new();
                    got.quantize_on(isa, format, x).unwrap();
                    assert_eq!(
                        got.as_bytes(),
                        want.as_bytes(),
                        "{isa:?} {format:?} row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn q8_formats_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for format in [ActFormat::Q8_0, ActFormat::Q8_1, ActFormat::Q8K] {
            let a = QuantizedActs::from_f32(format, &x).unwrap();
            let mut back = vec![0.0f32; 512];
            match format {
                ActFormat::Q8_0 => a
                    .q8_0()
                    .iter()
                    .zip(back.chunks_exact_mut(32))
                    .for_each(|(b, o)| b.dequantize(o)),
                ActFormat::Q8_1 => a
                    .q8_1()
                    .iter()
                    .zip(back.chunks_exact_mut(32))
                    .for_each(|(b, o)| b.dequantize(o)),
                _ => a
                    .q8k()
                    .iter()
                    .zip(back.chunks_exact_mut(256))
                    .for_each(|(b, o)| b.dequantize(o)),
            }
            let amax = 50.0f32 / 7.0;
            for (u, v) in x.iter().zip(&back) {
                // f16 rounding of the scale adds at most 2^-11 relative.
                assert!(
                    (u - v).abs() <= amax / 127.0 * 0.5 + amax * 1e-3,
                    "{format:?} {u} {v}"
                );
            }
        }
        let a = QuantizedActs::from_f32(ActFormat::Q8K, &x).unwrap();
        for b in a.q8k() {
            for j in 0..16 {
                let s: i16 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
                assert_eq!(b.bsum(j), s);
            }
        }
        let a = QuantizedActs::from_f32(ActFormat::Q8_1, &x).unwrap();
        for b in a.q8_1() {
            let s: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert!((b.s() - s as f32 * b.d()).abs() <= 1e-3 * b.s().abs().max(1.0));
        }
        assert!(QuantizedActs::from_f32(ActFormat::Q8K, &x[..100]).is_err());
    }
}
