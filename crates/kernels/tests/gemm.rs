//! `quant::gemm` (a block of a quantized product: weight rows × activation rows) against
//! `quant::dot::vec_dot`, one row and one activation row at a time.
//!
//! The contract is bit-for-bit equality with `vec_dot` on the same ISA, whatever the tiling
//! and however many tokens share the call: the model's parity tests (against transformers and
//! llama.cpp) rest on `vec_dot`'s values, and batching must not change a token's logits.
//! `vec_dot` itself is tested against llama.cpp's `vec_dot` and the scalar references in
//! `dot_simd.rs` / `dot_simd_kquants.rs`. For the k-quants every path also equals the scalar
//! reference exactly, which is checked here too.
//!
//! Shapes cross the tile edges (x86 tiles are 4 rows × 2 or 4 tokens, eight k-quant
//! super-blocks or four legacy blocks per float step): 1..9, 17 and 64 rows, 1..9, 16 and 33
//! tokens, row lengths with and without a partial last group, output strides wider than the
//! rows (the gaps must stay untouched), weights at an odd address.

use frugal_kernels::cpu::Isa;
use frugal_kernels::quant::{dot::vec_dot, gemm, ActFormat, QuantError, QuantType, QuantizedActs};
use frugal_testdata::Rng;

/// Every type with an integer dot product; the tiled ones first.
const TYPES: [QuantType; 13] = [
    QuantType::Q4K,
    QuantType::Q6K,
    QuantType::Q5K,
    QuantType::Q8_0,
    QuantType::Q5_0,
    QuantType::Q4_0,
    QuantType::IQ4NL,
    QuantType::Q2K,
    QuantType::Q3K,
    QuantType::IQ4XS,
    QuantType::Q4_1,
    QuantType::Q5_1,
    QuantType::MXFP4,
];

/// Byte offsets of a block's f16 fields (scales, offsets), which must be finite.
fn f16_offsets(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q4K | QuantType::Q5K | QuantType::Q4_1 | QuantType::Q5_1 => &[0, 2],
        QuantType::Q6K => &[208],
        QuantType::MXFP4 => &[],
        _ => &[0],
    }
}

/// `n` random rows of `k` weights, back to back, one byte into the buffer (an odd address).
/// Every code and scale byte is random; f16 fields are finite, of both signs.
fn random_rows(rng: &mut Rng, ty: QuantType, n: usize, k: usize) -> Vec<u8> {
    let ts = ty.type_size();
    let mut buf = rng.bytes(1 + n * ty.row_bytes(k).expect("whole blocks"));
    for b in buf[1..].chunks_exact_mut(ts) {
        for &o in f16_offsets(ty) {
            b[o..o + 2].copy_from_slice(&rng.f16_bits(17).to_le_bytes());
        }
        if ty == QuantType::MXFP4 {
            b[0] = 110 + (rng.next() % 30) as u8; // a finite E8M0 scale
        }
    }
    buf
}

/// Activations of mixed magnitude (blocks scaled up and down, the odd outlier), quantized.
fn random_acts(rng: &mut Rng, format: ActFormat, k: usize) -> QuantizedActs {
    let mut x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
    for (b, xb) in x.chunks_mut(32).enumerate() {
        let s = [1.0, 0.01, 40.0, 3.0][(b + rng.next() as usize) % 4];
        xb.iter_mut().for_each(|v| *v *= s);
    }
    let i = (rng.next() as usize) % k;
    x[i] *= 20.0;
    QuantizedActs::from_f32(format, &x).expect("whole blocks")
}

/// Runs `gemm` on `n` rows × `t` tokens with an output stride of `n + pad`, and checks every
/// value against `vec_dot` bit for bit (and, for the k-quants, against the scalar reference),
/// and that the padding was not written.
fn check(rng: &mut Rng, isa: Isa, ty: QuantType, n: usize, t: usize, k: usize, pad: usize) {
    let buf = random_rows(rng, ty, n, k);
    let rows = &buf[1..];
    let format = ty.act_format().expect("integer dot product");
    let acts: Vec<QuantizedActs> = (0..t).map(|_| random_acts(rng, format, k)).collect();
    let stride = n + pad;
    let sentinel = f32::from_bits(0x7fc0_1234);
    let mut out = vec![sentinel; (t - 1) * stride + n + pad];
    gemm(isa, ty, rows, &acts, &mut out, stride).expect("valid product");
    let rb = ty.row_bytes(k).expect("whole blocks");
    let exact_scalar = matches!(
        ty,
        QuantType::Q2K
            | QuantType::Q3K
            | QuantType::Q4K
            | QuantType::Q5K
            | QuantType::Q6K
            | QuantType::IQ4XS
    );
    for (ti, a) in acts.iter().enumerate() {
        for (r, row) in rows.chunks_exact(rb).enumerate() {
            let want = vec_dot(isa, ty, row, a).expect("valid row");
            let got = out[ti * stride + r];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{ty} {isa}: {n} rows × {t} tokens, k = {k}: row {r} token {ti}: gemm {got} vec_dot {want}"
            );
            if exact_scalar {
                let scalar = vec_dot(Isa::Scalar, ty, row, a).expect("valid row");
                assert_eq!(got.to_bits(), scalar.to_bits(), "{ty} {isa}: scalar");
            }
        }
        for p in 0..pad.min(out.len() - ti * stride - n) {
            assert_eq!(
                out[ti * stride + n + p].to_bits(),
                sentinel.to_bits(),
                "{ty} {isa}: wrote into the stride gap"
            );
        }
    }
}

/// Row lengths per type: one block group and a partial one (k-quants: 9 super-blocks = 8 + 1;
/// legacy: 9 blocks = 2·4 + 1).
fn row_len(ty: QuantType) -> usize {
    9 * ty.block_size()
}

#[test]
fn gemm_equals_vec_dot_on_every_isa_and_tile_edge() {
    let mut rng = Rng(0x6765_6d6d);
    let ns = [1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 64];
    let ts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33];
    for isa in Isa::available() {
        for ty in TYPES {
            let k = row_len(ty);
            for (i, &n) in ns.iter().enumerate() {
                for (j, &t) in ts.iter().enumerate() {
                    check(&mut rng, isa, ty, n, t, k, (i + j) % 3 * 3);
                }
            }
        }
    }
}

#[test]
fn gemm_equals_vec_dot_for_other_row_lengths() {
    let mut rng = Rng(0x6c65_6e67);
    for isa in Isa::available() {
        for ty in TYPES {
            // One block, a few (no full group), two groups exactly, two and a half.
            for blocks in [1, 3, 8, 16, 21] {
                let k = blocks * ty.block_size();
                for (n, t) in [(1, 1), (5, 3), (9, 5), (4, 4), (13, 9)] {
                    check(&mut rng, isa, ty, n, t, k, n % 2);
                }
            }
        }
    }
}

#[test]
fn bad_operands_are_errors() {
    let mut rng = Rng(7);
    let ty = QuantType::Q4K;
    let k = 512;
    let rows = random_rows(&mut rng, ty, 3, k)[1..].to_vec();
    let acts = vec![random_acts(&mut rng, ActFormat::Q8K, k); 2];
    let isa = Isa::detect();
    let mut out = vec![0.0f32; 6];

    let q8_0 = vec![random_acts(&mut rng, ActFormat::Q8_0, k)];
    let e = gemm(isa, ty, &rows, &q8_0, &mut out, 3).unwrap_err();
    assert!(matches!(e, QuantError::ActFormat { .. }), "{e}");

    let mixed = vec![acts[0].clone(), random_acts(&mut rng, ActFormat::Q8K, 256)];
    let e = gemm(isa, ty, &rows, &mixed, &mut out, 3).unwrap_err();
    assert!(matches!(e, QuantError::Shape { .. }), "{e}");

    let e = gemm(isa, ty, &rows[..rows.len() - 1], &acts, &mut out, 3).unwrap_err();
    assert!(matches!(e, QuantError::ByteLength { .. }), "{e}");

    let e = gemm(isa, ty, &rows, &acts, &mut out[..5], 3).unwrap_err();
    assert!(matches!(e, QuantError::Shape { .. }), "{e}");

    let e = gemm(isa, ty, &rows, &acts, &mut out, 2).unwrap_err();
    assert!(matches!(e, QuantError::Shape { .. }), "{e}");

    let q8k = vec![random_acts(&mut rng, ActFormat::Q8K, k)];
    let e = gemm(isa, QuantType::Q8K, &rows, &q8k, &mut out, 3).unwrap_err();
    assert!(matches!(e, QuantError::Unsupported { .. }), "{e}");

    // Nothing to do is not an error, and writes nothing.
    gemm(isa, ty, &rows, &[], &mut [], 3).expect("no activation rows");
    gemm(isa, ty, &[], &acts, &mut out, 0).expect("no weight rows");

    // The right shapes work, and the stride may leave a gap.
    gemm(isa, ty, &rows, &acts, &mut out, 3).expect("valid");
    let mut wide = vec![0.0f32; 3 + 5];
    gemm(isa, ty, &rows, &acts, &mut wide, 5).expect("valid");
}
