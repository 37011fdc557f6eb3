//! `quant::repack` (Q4_K, Q6_K and short Q8_0 rows interleaved eight by eight) against
//! `quant::dot::vec_dot` of the original rows, bit for bit, on every available ISA and the
//! scalar reference.
//!
//! `vec_dot` is itself tested against llama.cpp's `vec_dot` and the scalar references
//! (`dot_simd_kquants.rs`); the model's parity tests rest on its values, so the repacked
//! product must not change a single bit. Shapes cross the group edge (1..=9, 15, 16, 17, 33
//! rows: tails of 0..7 plain rows, and matrices with no whole group), rows of 1, 2, 8, 9 and
//! 28 super-blocks, a matrix repacked on several threads (4099 × 2048), 1..=9, 16, 33 and 70
//! tokens (the multi-token tiles, their remainders, two activation blocks), an output stride
//! wider than the rows, weights at an odd address. Activations mix magnitudes per 32 values so that a different order of the f32
//! steps would show in the low bits.

use frugal_kernels::cpu::Isa;
use frugal_kernels::quant::repack::{repack, repack_pair, repacked_gemm, repacked_gemm_pair, ROWS};
use frugal_kernels::quant::{dot::vec_dot, ActFormat, QuantError, QuantType, QuantizedActs};
use frugal_testdata::Rng;

/// `n` random rows of `k` weights one byte into the buffer (an odd address); every code and
/// scale byte random, the f16 super-scales finite, of both signs.
fn random_rows(rng: &mut Rng, ty: QuantType, n: usize, k: usize) -> Vec<u8> {
    let mut buf = rng.bytes(1 + n * ty.row_bytes(k).expect("whole blocks"));
    let f16_at: &[usize] = match ty {
        QuantType::Q6K => &[208],
        QuantType::Q8_0 => &[0],
        _ => &[0, 2],
    };
    for b in buf[1..].chunks_exact_mut(ty.type_size()) {
        for &o in f16_at {
            b[o..o + 2].copy_from_slice(&rng.f16_bits(17).to_le_bytes());
        }
    }
    buf
}

/// Activations for a `ty` matrix (Q8_0 for Q8_0, else Q8_K).
fn random_acts(rng: &mut Rng, ty: QuantType, k: usize) -> QuantizedActs {
    let mut x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
    for (b, xb) in x.chunks_mut(32).enumerate() {
        let s = [1.0, 0.01, 40.0, 3.0][(b + rng.next() as usize) % 4];
        xb.iter_mut().for_each(|v| *v *= s);
    }
    let format = ty.act_format().expect("kernel type");
    QuantizedActs::from_f32(format, &x).expect("whole blocks")
}

/// `n` rows of `nb` blocks (super-blocks for the K-quants) against `t` tokens.
fn check(rng: &mut Rng, ty: QuantType, n: usize, nb: usize, t: usize) {
    let k = ty.block_size() * nb;
    let buf = random_rows(rng, ty, n, k);
    let rows = &buf[1..];
    let w = repack(ty, rows, n, k).expect("repack");
    assert_eq!((w.rows(), w.cols()), (n, k));
    let acts: Vec<QuantizedActs> = (0..t).map(|_| random_acts(rng, ty, k)).collect();
    let stride = n + 3;
    let sentinel = f32::from_bits(0x7fc0_1234);
    let rb = ty.row_bytes(k).expect("whole blocks");
    for isa in Isa::available() {
        let mut out = vec![sentinel; (t - 1) * stride + n + 3];
        repacked_gemm(isa, &w, 0..n, &acts, &mut out, stride).expect("valid product");
        // Row ranges cut groups and the tail anywhere (how products split rows over threads);
        // `out` itself is checked against `vec_dot` below.
        for (start, end) in [(0, n), (n / 3, n - n / 4), (n / 2, n)] {
            let len = end - start;
            let mut part = vec![sentinel; (t - 1) * stride + len];
            repacked_gemm(isa, &w, start..end, &acts, &mut part, stride).expect("valid product");
            for ti in 0..t {
                for j in 0..len {
                    let (got, want) = (part[ti * stride + j], out[ti * stride + start + j]);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{isa}: rows {start}..{end} row {j}"
                    );
                }
            }
        }
        for (ti, a) in acts.iter().enumerate() {
            for (r, row) in rows.chunks_exact(rb).enumerate() {
                let want = vec_dot(isa, ty, row, a).expect("valid row");
                let got = out[ti * stride + r];
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{isa}: {n} rows × {nb} blocks × {t} tokens: row {r} token {ti}: \
                     repacked {got} vec_dot {want}"
                );
            }
            for p in n..stride.min(out.len() - ti * stride) {
                assert_eq!(
                    out[ti * stride + p].to_bits(),
                    sentinel.to_bits(),
                    "{isa}: wrote into the stride gap"
                );
            }
        }
    }
}

#[test]
fn repacked_equals_vec_dot_bit_for_bit() {
    let mut rng = Rng(0x7265_7061_636b);
    for ty in [QuantType::Q4K, QuantType::Q6K] {
        for n in [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 33] {
            for nb in [1, 2, 8, 9] {
                check(&mut rng, ty, n, nb, 1 + (n + nb) % 3);
            }
        }
        // Token counts across the tiles' edges (full tiles, every remainder, the one-token
        // kernel) and past a 60-token activation block (61: a last block of one token, which
        // takes the one-token kernel), on groups cut by the row ranges.
        for t in (1..=9).chain([16, 33, 61, 70]) {
            check(&mut rng, ty, 17, 2, t);
            check(&mut rng, ty, 3 * ROWS + 5, 9, t);
        }
        check(&mut rng, ty, 2 * ROWS, 28, 1);
        check(&mut rng, ty, 2 * ROWS, 28, 16);
        // Large enough (4.7 MB and more) to be repacked on several threads.
        check(&mut rng, ty, 512 * ROWS + 3, 8, 1);
    }
}

/// Q8_0 rows of 1 to 8 blocks (MLA's `k_b`: 4): the terms of whole chunks of four blocks and
/// those after them, summed as the x86 `vec_dot` paths sum them.
#[test]
fn short_q8_0_rows_equal_vec_dot_bit_for_bit() {
    let mut rng = Rng(0x7138_5f30);
    for nb in 1..=8 {
        for n in [8, 9, 17, 2 * ROWS + 7] {
            check(&mut rng, QuantType::Q8_0, n, nb, 1 + (n + nb) % 3);
        }
    }
    check(&mut rng, QuantType::Q8_0, 4096, 4, 1);
    // Long rows keep the plain layout (its tiled many-token product).
    let rows = random_rows(&mut rng, QuantType::Q8_0, 8, 288);
    assert!(matches!(
        repack(QuantType::Q8_0, &rows[1..], 8, 288),
        Err(QuantError::Unsupported { .. })
    ));
}

/// A gate/up pair (`repack_pair`: the two matrices' groups alternating in one buffer): each
/// half alone, and both through `repacked_gemm_pair` over row ranges that cut groups and the
/// tails, equal `vec_dot` of the original rows bit for bit.
#[test]
fn paired_matrices_equal_vec_dot_bit_for_bit() {
    let mut rng = Rng(0x7061_6972);
    for ty in [QuantType::Q4K, QuantType::Q6K] {
        for (n, nb) in [(8, 1), (17, 2), (3 * ROWS + 5, 4), (64, 4)] {
            let k = 256 * nb;
            let (ba, bb) = (
                random_rows(&mut rng, ty, n, k),
                random_rows(&mut rng, ty, n, k),
            );
            let (a, b) = (&ba[1..], &bb[1..]);
            let (pa, pb) = repack_pair(ty, a, b, n, k).expect("pair");
            assert!(pa.is_paired_with(&pb) && pb.is_paired_with(&pa));
            let single = repack(ty, a, n, k).expect("repack");
            assert!(!single.is_paired_with(&pa));
            let act = random_acts(&mut rng, ty, k);
            let rb = ty.row_bytes(k).expect("whole blocks");
            for isa in Isa::available() {
                let want = |rows: &[u8], r: usize| {
                    vec_dot(isa, ty, &rows[r * rb..(r + 1) * rb], &act).expect("valid row")
                };
                for (start, end) in [(0, n), (n / 3, n - n / 4), (n / 2, n), (1, 2)] {
                    let len = end - start;
                    let (mut oa, mut ob) = (vec![0.0f32; len], vec![0.0f32; len]);
                    repacked_gemm_pair(isa, (&pa, &pb), start..end, &act, &mut oa, &mut ob)
                        .expect("valid product");
                    let mut alone = vec![0.0f32; len];
                    repacked_gemm(
                        isa,
                        &pb,
                        start..end,
                        std::slice::from_ref(&act),
                        &mut alone,
                        len,
                    )
                    .expect("valid product");
                    for j in 0..len {
                        let r = start + j;
                        let what =
                            format!("{isa} {} {n}x{k} rows {start}..{end} row {r}", ty.name());
                        assert_eq!(oa[j].to_bits(), want(a, r).to_bits(), "gate: {what}");
                        assert_eq!(ob[j].to_bits(), want(b, r).to_bits(), "up: {what}");
                        assert_eq!(alone[j].to_bits(), ob[j].to_bits(), "up alone: {what}");
                    }
                }
            }
        }
    }
    let rows = random_rows(&mut rng, QuantType::Q8_0, 8, 128);
    assert!(repack_pair(QuantType::Q8_0, &rows[1..], &rows[1..], 8, 128).is_err());
}

#[test]
fn bad_input_is_an_error() {
    let mut rng = Rng(1);
    let ty = QuantType::Q4K;
    let rows = random_rows(&mut rng, ty, 8, 512);
    let rows = &rows[1..];
    assert!(matches!(
        repack(QuantType::Q5K, rows, 8, 512),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(matches!(
        repack(ty, &rows[1..], 8, 512),
        Err(QuantError::ByteLength { .. })
    ));
    assert!(repack(ty, rows, 8, 500).is_err());
    let w = repack(ty, rows, 8, 512).expect("repack");
    let mut out = vec![0.0; 8];
    let wrong_len = QuantizedActs::from_f32(ActFormat::Q8K, &[0.5; 256]).expect("acts");
    assert!(repacked_gemm(Isa::Scalar, &w, 0..8, &[wrong_len], &mut out, 8).is_err());
    let q8_0 = QuantizedActs::from_f32(ActFormat::Q8_0, &[0.5; 512]).expect("acts");
    assert!(matches!(
        repacked_gemm(Isa::Scalar, &w, 0..8, &[q8_0], &mut out, 8),
        Err(QuantError::ActFormat { .. })
    ));
    let acts = QuantizedActs::from_f32(ActFormat::Q8K, &[0.5; 512]).expect("acts");
    assert!(repacked_gemm(
        Isa::Scalar,
        &w,
        0..8,
        std::slice::from_ref(&acts),
        &mut out[..7],
        8
    )
    .is_err());
    assert!(repacked_gemm(Isa::Scalar, &w, 4..9, &[acts], &mut out, 8).is_err());
}
