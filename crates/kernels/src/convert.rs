//! Element conversions to f32: f16, bf16 and FP8 e4m3 (DeepSeek's block-scaled weights).
//!
//! These are the "dequantize" kernels of the plain element types. Every function is a scalar
//! reference; SIMD variants, when added, live in `arch/` and are tested against these.
//!
//! FP8 e4m3 ("e4m3fn" in PyTorch, OCP FP8 spec): 1 sign bit, 4 exponent bits (bias 7),
//! 3 mantissa bits; no infinities; `S.1111.111` is NaN; the largest finite value is 448.
//! value = (-1)^s × 2^(e-7) × (1 + m/8) for e > 0, and (-1)^s × 2^-6 × (m/8) for e = 0.

use half::{bf16, f16};

/// Decode one FP8 e4m3 (e4m3fn) byte.
pub fn f8e4m3_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((byte >> 3) & 0x0f) as i32;
    let man = (byte & 0x07) as f32;
    if exp == 0x0f && byte & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        // Subnormal: 2^(1-7) × m/8.
        sign * man * (2.0f32).powi(-9)
    } else {
        sign * (1.0 + man / 8.0) * (2.0f32).powi(exp - 7)
    }
}

/// The 256 decoded values of FP8 e4m3, built once; decoding is then a table lookup.
fn f8e4m3_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| f8e4m3_to_f32(i as u8)))
}

/// Decode a row of FP8 e4m3 bytes into `out`, multiplying by `scale`.
///
/// Panics if the lengths differ (a caller bug, not a data error).
pub fn f8e4m3_row_to_f32(src: &[u8], scale: f32, out: &mut [f32]) {
    assert_eq!(src.len(), out.len(), "f8e4m3_row_to_f32: length mismatch");
    let table = f8e4m3_table();
    for (o, &b) in out.iter_mut().zip(src) {
        *o = table[b as usize] * scale;
    }
}

/// Decode little-endian f16 bytes into `out`. `src` holds `2 * out.len()` bytes.
pub fn f16_bytes_to_f32(src: &[u8], out: &mut [f32]) {
    assert_eq!(
        src.len(),
        out.len() * 2,
        "f16_bytes_to_f32: length mismatch"
    );
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// Decode little-endian bf16 bytes into `out`. `src` holds `2 * out.len()` bytes.
///
/// bf16 is the top half of an f32, so this is exact: shift the bits up by 16.
pub fn bf16_bytes_to_f32(src: &[u8], out: &mut [f32]) {
    assert_eq!(
        src.len(),
        out.len() * 2,
        "bf16_bytes_to_f32: length mismatch"
    );
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// Decode little-endian f32 bytes into `out`. `src` holds `4 * out.len()` bytes.
pub fn f32_bytes_to_f32(src: &[u8], out: &mut [f32]) {
    assert_eq!(
        src.len(),
        out.len() * 4,
        "f32_bytes_to_f32: length mismatch"
    );
    for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// `src` (little-endian f32 bytes) seen as f32 values without copying, when it is aligned to
/// 4 bytes and this target is little-endian (GGUF and safetensors data usually are);
/// `None` otherwise, where [`f32_bytes_to_f32`] decodes a copy.
pub fn f32_view(src: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") || !src.len().is_multiple_of(4) {
        return None;
    }
    // SAFETY: every bit pattern is a valid f32, and `align_to` returns a correctly aligned
    // middle part; it is the whole slice only when the prefix and suffix are empty.
    let (pre, mid, post) = unsafe { src.align_to::<f32>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

/// Dequantize a DeepSeek FP8 block-scaled weight of shape `[rows, cols]` into f32.
///
/// `scale_inv` has shape `[ceil(rows/block), ceil(cols/block)]` (the checkpoint's
/// `weight_scale_inv`, despite its name the multiplier): `w[r][c] = fp8[r][c] × s[r/b][c/b]`.
/// Edge blocks may be partial. Rows are written one at a time, so callers can dequantize a
/// slice of rows (`row_start..row_end`) without materialising the whole tensor.
pub fn dequant_fp8_block_rows(
    fp8: &[u8],
    scale_inv: &[f32],
    cols: usize,
    block: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let scale_cols = cols.div_ceil(block);
    assert_eq!(
        out.len(),
        rows.len() * cols,
        "dequant_fp8_block_rows: out length"
    );
    for (i, r) in rows.enumerate() {
        let src = &fp8[r * cols..(r + 1) * cols];
        let dst = &mut out[i * cols..(i + 1) * cols];
        let srow = &scale_inv[(r / block) * scale_cols..(r / block + 1) * scale_cols];
        for (bc, s) in srow.iter().enumerate() {
            let c0 = bc * block;
            let c1 = (c0 + block).min(cols);
            f8e4m3_row_to_f32(&src[c0..c1], *s, &mut dst[c0..c1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_known_values() {
        assert_eq!(f8e4m3_to_f32(0x00), 0.0);
        assert_eq!(f8e4m3_to_f32(0x38), 1.0); // e=7, m=0
        assert_eq!(f8e4m3_to_f32(0x7e), 448.0); // largest finite
        assert_eq!(f8e4m3_to_f32(0xfe), -448.0);
        assert_eq!(f8e4m3_to_f32(0x01), 2.0f32.powi(-9)); // smallest subnormal
        assert!(f8e4m3_to_f32(0x7f).is_nan());
        assert!(f8e4m3_to_f32(0xff).is_nan());
    }

    #[test]
    fn f32_view_only_where_aligned() {
        let values = [1.5f32, -2.0, 3.25];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        // A Vec<u8> of whole f32s at some 4-aligned offset, and the same one byte later.
        let mut buf = vec![0u8; bytes.len() + 8];
        let at = buf.as_ptr().align_offset(4);
        buf[at..at + 12].copy_from_slice(&bytes);
        assert_eq!(f32_view(&buf[at..at + 12]), Some(&values[..]));
        buf[at + 1..at + 13].copy_from_slice(&bytes);
        assert_eq!(f32_view(&buf[at + 1..at + 13]), None);
        assert_eq!(f32_view(&buf[at..at + 11]), None);
    }

    #[test]
    fn fp8_block_dequant_uses_the_right_scale() {
        // 3×5 matrix, blocks of 2: scale grid 2×3.
        let fp8 = vec![0x38u8; 15]; // all 1.0
        let s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = vec![0.0; 15];
        dequant_fp8_block_rows(&fp8, &s, 5, 2, 0..3, &mut out);
        assert_eq!(&out[0..5], &[1.0, 1.0, 2.0, 2.0, 3.0]);
        assert_eq!(&out[10..15], &[4.0, 4.0, 5.0, 5.0, 6.0]);
    }
}
