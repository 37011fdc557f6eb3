//! f32 → quantized blocks: llama.cpp's quantizers without an importance matrix.
//!
//! Each function reproduces, bit for bit, what llama.cpp's `ggml_quantize_chunk` writes for a
//! type when no importance matrix is given (`quantize_row_q8_0_ref`, …, `quantize_row_q6_K_ref`,
//! `quantize_iq4_nl`, `quantize_iq4_xs`; ggml-quants.c at llama.cpp commit 0c1e570): the same
//! f32 operations in the same order, the same rounding (`roundf`, ggml's `nearest_int`, casts
//! that truncate), and f16 scales rounded to nearest even. The tests check that against blocks
//! written by llama.cpp's own library (`fixtures/quant/quantize_refs.safetensors`) and against
//! the Q8_0/Q4_K_M GGUFs llama.cpp made from the F32 fixtures (`fixtures/gguf/`).
//!
//! - [`legacy`]: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (one scale, and an offset for `_1`, per 32).
//! - [`kquants`]: Q2_K…Q6_K (sub-block scales chosen by a small search, then quantized
//!   themselves against an f16 super-scale).
//! - [`iquants`]: IQ4_NL and IQ4_XS (codes through a non-uniform 16-value table).
//!
//! Entry points: [`quantize_row`] (one row, any type) and [`quantize_rows`] (many rows split
//! over threads; rows are independent, so the bytes do not depend on the thread count).

pub mod iquants;
pub mod kquants;
pub mod legacy;

use super::{QuantError, QuantType};

/// Whether [`quantize_row`] can write `ty`.
pub fn can_quantize(ty: QuantType) -> bool {
    use QuantType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2K
            | Q3K
            | Q4K
            | Q5K
            | Q6K
            | IQ4NL
            | IQ4XS
    )
}

/// Quantizes the row `src` into `dst` (`ty.row_bytes(src.len())` bytes).
///
/// Errors: a type this module cannot write, a row that is not whole blocks, `dst` of the wrong
/// length.
pub fn quantize_row(ty: QuantType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported { ty: ty.name() });
    }
    let expected = ty.row_bytes(src.len())?;
    if dst.len() != expected {
        return Err(QuantError::ByteLength {
            ty: ty.name(),
            n: src.len(),
            expected,
            got: dst.len(),
        });
    }
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let block: fn(&[f32], &mut [u8]) = match ty {
        QuantType::F32 => |x, o| o.copy_from_slice(&x[0].to_le_bytes()),
        QuantType::F16 => |x, o| o.copy_from_slice(&half::f16::from_f32(x[0]).to_le_bytes()),
        QuantType::BF16 => |x, o| o.copy_from_slice(&f32_to_bf16(x[0]).to_le_bytes()),
        QuantType::Q4_0 => legacy::q4_0,
        QuantType::Q4_1 => legacy::q4_1,
        QuantType::Q5_0 => legacy::q5_0,
        QuantType::Q5_1 => legacy::q5_1,
        QuantType::Q8_0 => legacy::q8_0,
        QuantType::Q2K => kquants::q2_k,
        QuantType::Q3K => kquants::q3_k,
        QuantType::Q4K => kquants::q4_k,
        QuantType::Q5K => kquants::q5_k,
        QuantType::Q6K => kquants::q6_k,
        QuantType::IQ4NL => iquants::iq4_nl,
        QuantType::IQ4XS => iquants::iq4_xs,
        other => return Err(QuantError::Unsupported { ty: other.name() }),
    };
    for (x, o) in src.chunks_exact(bs).zip(dst.chunks_exact_mut(ts)) {
        block(x, o);
    }
    Ok(())
}

/// Quantizes `src` (rows of `n_per_row` values, back to back) into `dst`, rows split over up
/// to `threads` threads. Errors as [`quantize_row`], and when `src` is not whole rows.
pub fn quantize_rows(
    ty: QuantType,
    src: &[f32],
    n_per_row: usize,
    dst: &mut [u8],
    threads: usize,
) -> Result<(), QuantError> {
    let row_bytes = ty.row_bytes(n_per_row)?;
    let rows = src.len().checked_div(n_per_row).unwrap_or(0);
    if n_per_row == 0 || rows * n_per_row != src.len() || dst.len() != rows * row_bytes {
        return Err(QuantError::ByteLength {
            ty: ty.name(),
            n: src.len(),
            expected: rows * row_bytes,
            got: dst.len(),
        });
    }
    // Enough rows per thread that starting a thread is worth it (~64k weights).
    let min_rows = (65536 / n_per_row).max(1);
    let threads = threads.clamp(1, rows.div_ceil(min_rows).max(1));
    if threads == 1 {
        for (x, o) in src
            .chunks_exact(n_per_row)
            .zip(dst.chunks_exact_mut(row_bytes))
        {
            quantize_row(ty, x, o)?;
        }
        return Ok(());
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = src
            .chunks(per * n_per_row)
            .zip(dst.chunks_mut(per * row_bytes))
            .map(|(x, o)| {
                s.spawn(move || -> Result<(), QuantError> {
                    for (x, o) in x.chunks_exact(n_per_row).zip(o.chunks_exact_mut(row_bytes)) {
                        quantize_row(ty, x, o)?;
                    }
                    Ok(())
                })
            })
            .collect();
        parts
            .into_iter()
            .try_for_each(|h| h.join().expect("quantizer threads do not panic"))
    })
}

/// f32 → bf16 as ggml rounds it: to nearest even, NaN kept quiet (`ggml_compute_fp32_to_bf16`).
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// Round to nearest, ties to even, as ggml's `nearest_int`: adding 1.5·2²³ leaves the rounded
/// integer in the low mantissa bits (valid for |x| ≤ 2²² − 1, which ggml asserts).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// f32 → f16 bytes, rounded to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline]
pub(crate) fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// The f32 value of f16 bytes (what the dequantizer will read back).
#[inline]
pub(crate) fn f16_value(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// Below this the largest |x| of a group counts as zero (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(31.4), 31);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties to the even one (1.0).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::NAN) & 0x7fc0, 0x7fc0);
    }

    #[test]
    fn every_type_round_trips_within_its_step() {
        // A smooth row: each type's dequantized values stay within a few steps of the input.
        let x: Vec<f32> = (0..512).map(|i| ((i as f32) * 0.37).sin() * 2.0).collect();
        for (ty, tol) in [
            (QuantType::F16, 1e-3),
            (QuantType::BF16, 1e-2),
            (QuantType::Q8_0, 0.02),
            (QuantType::Q5_0, 0.13),
            (QuantType::Q5_1, 0.1),
            (QuantType::Q4_0, 0.26),
            (QuantType::Q4_1, 0.2),
            (QuantType::Q6K, 0.05),
            (QuantType::Q5K, 0.1),
            (QuantType::Q4K, 0.2),
            (QuantType::Q3K, 0.55),
            (QuantType::Q2K, 1.0),
            (QuantType::IQ4NL, 0.25),
            (QuantType::IQ4XS, 0.25),
        ] {
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_row(ty, &x, &mut q).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_row(ty, &q, &mut y).unwrap();
            let err = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err <= tol, "{ty}: max error {err} > {tol}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [0.0f32; 48];
        let mut q = [0u8; 64];
        assert!(matches!(
            quantize_row(QuantType::Q8_0, &x, &mut q),
            Err(QuantError::NotWholeBlocks { .. })
        ));
        assert!(matches!(
            quantize_row(QuantType::Q8_0, &x[..32], &mut q),
            Err(QuantError::ByteLength {
                expected: 34,
                got: 64,
                ..
            })
        ));
        assert_eq!(
            quantize_row(QuantType::IQ2XXS, &[0.0; 256], &mut [0u8; 66]),
            Err(QuantError::Unsupported { ty: "IQ2_XXS" })
        );
        assert!(quantize_rows(QuantType::Q8_0, &x[..40], 32, &mut q[..34], 2).is_err());
    }

    #[test]
    fn threads_do_not_change_the_bytes() {
        let x: Vec<f32> = (0..256 * 600)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut one = vec![0u8; 600 * 144];
        let mut many = vec![0u8; 600 * 144];
        quantize_rows(QuantType::Q4K, &x, 256, &mut one, 1).unwrap();
        quantize_rows(QuantType::Q4K, &x, 256, &mut many, 5).unwrap();
        assert_eq!(one, many);
    }
}
