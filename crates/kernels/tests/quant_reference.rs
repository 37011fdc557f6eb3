//! Quantized blocks against gguf-py (`fixtures/quant/quant_refs.safetensors`, made by
//! `fixtures/quant/make_quant_refs.py` with gguf-py's numpy `dequantize`/`quantize`).
//!
//! - Dequantization equals gguf-py's bit for bit, for every supported type, on random block
//!   bytes (every code pattern) and on gguf-py-quantized data, from aligned and unaligned
//!   addresses.
//! - The fused `vec_dot_row` is within `DOT_TOL · Σ_i |x_i|·max_i |w_i|` of the f64 dot product of
//!   gguf-py's dequantized weights with `x` (f32 rounding of sums over up to 2048 values, with
//!   sub-block sums scaled afterwards instead of per weight).
//! - Seeded random blocks (a proptest-style loop): `vec_dot_row` against the f64 dot of
//!   `dequantize_row`, same bound.
//! - Truncated, overlong and not-whole-block inputs are errors for every type.

use frugal_kernels::quant::{dequantize_row, vec_dot_row, QuantError, QuantType};
use frugal_testdata::{f32s_le as f32s, Rng};
use safetensors::SafeTensors;

/// Relative tolerance of the fused dot product, against `Σ|x|·max|w|` (see the module doc).
/// Observed maxima are 1e-9..5e-8 (printed with `--nocapture`); the worst case of f32
/// summation over 2048 terms would be ~1e-4, a typical one ~√2048·2^-24 ≈ 3e-6.
const DOT_TOL: f64 = 1e-6;

const SUPPORTED: [&str; 16] = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4",
];

fn fixture() -> Vec<u8> {
    let path = frugal_testdata::fixtures_dir().join("quant/quant_refs.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{} is committed: {e}", path.display()))
}

/// `(|a − b| / (Σ|x|·max|w|))`, with `b` the f64 dot of `w` and `x`.
fn dot_err(fused: f32, w: &[f32], x: &[f32]) -> f64 {
    let exact: f64 = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum();
    let scale: f64 = x.iter().map(|x| x.abs() as f64).sum::<f64>()
        * w.iter().fold(0.0f64, |m, w| m.max(w.abs() as f64));
    if scale == 0.0 {
        assert_eq!(fused, 0.0);
        return 0.0;
    }
    (fused as f64 - exact).abs() / scale
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    let bytes = fixture();
    let st =
        SafeTensors::deserialize(&bytes).expect("OK because the fixture is a safetensors file");
    let mut seen = std::collections::BTreeSet::new();
    for (name, view) in st.tensors() {
        let Some(prefix) = name.strip_suffix(".bytes") else {
            continue;
        };
        let ty_name = prefix
            .split('.')
            .next()
            .expect("OK because split yields at least one piece");
        let ty = QuantType::from_name(ty_name).unwrap_or_else(|| panic!("unknown type {ty_name}"));
        let want = f32s(
            st.tensor(&format!("{prefix}.values"))
                .expect("values beside bytes")
                .data(),
        );
        let src = view.data();
        // From an aligned copy and from an odd address: blocks have no alignment requirement.
        let mut shifted = vec![0u8; src.len() + 1];
        shifted[1..].copy_from_slice(src);
        for src in [src, &shifted[1..]] {
            let mut got = vec![f32::NAN; want.len()];
            dequantize_row(ty, src, &mut got).unwrap_or_else(|e| panic!("{prefix}: {e}"));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{prefix}[{i}]: {g} vs gguf-py {w}"
                );
            }
        }
        println!("{prefix}: {} weights bit-exact", want.len());
        seen.insert(ty_name.to_string());
    }
    let missing: Vec<_> = SUPPORTED
        .iter()
        .filter(|t| !seen.contains(**t) && **t != "F32")
        .collect();
    assert!(missing.is_empty(), "no gguf-py reference for {missing:?}");
}

#[test]
fn vec_dot_matches_gguf_py_values() {
    let bytes = fixture();
    let st =
        SafeTensors::deserialize(&bytes).expect("OK because the fixture is a safetensors file");
    let mut rng = Rng(7);
    for (name, view) in st.tensors() {
        let Some(prefix) = name.strip_suffix(".bytes") else {
            continue;
        };
        let ty = QuantType::from_name(prefix.split('.').next().expect("OK: non-empty"))
            .expect("OK because the first test checks the names");
        let w = f32s(
            st.tensor(&format!("{prefix}.values"))
                .expect("values beside bytes")
                .data(),
        );
        let mut worst = 0.0f64;
        for _ in 0..16 {
            let x: Vec<f32> = (0..w.len()).map(|_| rng.unit()).collect();
            let fused =
                vec_dot_row(ty, view.data(), &x).unwrap_or_else(|e| panic!("{prefix}: {e}"));
            worst = worst.max(dot_err(fused, &w, &x));
        }
        println!(
            "{prefix}: vec_dot max error {worst:.2e} of Σ|x|·max|w| ({} weights)",
            w.len()
        );
        assert!(
            worst <= DOT_TOL,
            "{prefix}: vec_dot error {worst:e} > {DOT_TOL:e}"
        );
    }
}

#[test]
fn vec_dot_on_random_blocks() {
    let mut rng = Rng(2026);
    for name in SUPPORTED {
        let ty = QuantType::from_name(name).expect("OK because SUPPORTED holds llama.cpp names");
        let (bs, ts) = (ty.block_size(), ty.type_size());
        let mut worst = 0.0f64;
        for _ in 0..64 {
            let blocks = 1 + (rng.next() % 8) as usize;
            let n = blocks * bs.max(32);
            let mut src = rng.bytes(n / bs * ts);
            fix_scales(ty, &mut src, &mut rng);
            let x: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
            let mut w = vec![0.0f32; n];
            dequantize_row(ty, &src, &mut w).expect("OK because the lengths match");
            assert!(
                w.iter().all(|w| w.is_finite()),
                "{name}: finite scales give finite weights"
            );
            let fused = vec_dot_row(ty, &src, &x).expect("OK because the lengths match");
            worst = worst.max(dot_err(fused, &w, &x));
        }
        println!("{name}: random blocks, vec_dot max error {worst:.2e} of Σ|x|·max|w|");
        assert!(
            worst <= DOT_TOL,
            "{name}: vec_dot error {worst:e} > {DOT_TOL:e}"
        );
    }
}

/// Replaces the f16 fields (offsets from ggml-common.h) with finite values, as the Python script
/// does; F32/F16/BF16 elements get finite values too.
fn fix_scales(ty: QuantType, src: &mut [u8], rng: &mut Rng) {
    let offsets: &[usize] = match ty.name() {
        "Q4_0" | "Q5_0" | "Q8_0" | "IQ4_NL" | "IQ4_XS" => &[0],
        "Q4_1" | "Q5_1" | "Q4_K" | "Q5_K" => &[0, 2],
        "Q2_K" => &[80, 82],
        "Q3_K" => &[108],
        "Q6_K" => &[208],
        "F16" | "BF16" => &[0],
        "MXFP4" => {
            // E8M0 exponents up to 2^(200-128): sums stay far from f32 overflow.
            for block in src.chunks_exact_mut(17) {
                block[0] = (rng.next() % 201) as u8;
            }
            return;
        }
        "F32" => {
            for b in src.chunks_exact_mut(4) {
                b.copy_from_slice(&(rng.unit() * 100.0).to_le_bytes());
            }
            return;
        }
        other => panic!("no scale offsets for {other}"),
    };
    for block in src.chunks_exact_mut(ty.type_size()) {
        for &o in offsets {
            let v = rng.f16_bits(19).to_le_bytes();
            // Read as bf16 these bits have an exponent field of at most 19·8 + 7 < 255: finite.
            block[o..o + 2].copy_from_slice(&v);
        }
    }
}

#[test]
fn bad_lengths_are_errors_for_every_type() {
    for name in SUPPORTED {
        let ty = QuantType::from_name(name).expect("OK: llama.cpp name");
        let (bs, ts) = (ty.block_size(), ty.type_size());
        let n = 2 * bs.max(32);
        let good = vec![0u8; n / bs * ts];
        let x = vec![1.0f32; n + 1];
        let mut out = vec![0.0f32; n + 1];
        assert!(dequantize_row(ty, &good, &mut out[..n]).is_ok(), "{name}");
        assert_eq!(vec_dot_row(ty, &good, &x[..n]), Ok(0.0), "{name}");
        for bad in [&good[..good.len() - 1], &good[..good.len() - ts], &[][..]] {
            assert!(
                matches!(
                    dequantize_row(ty, bad, &mut out[..n]),
                    Err(QuantError::ByteLength { .. })
                ),
                "{name}: truncated input must be an error"
            );
            assert!(
                matches!(
                    vec_dot_row(ty, bad, &x[..n]),
                    Err(QuantError::ByteLength { .. })
                ),
                "{name}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            dequantize_row(ty, &long, &mut out[..n]),
            Err(QuantError::ByteLength { .. })
        ));
        if bs > 1 {
            let e = dequantize_row(ty, &good, &mut out[..n + 1]).unwrap_err();
            assert_eq!(
                e,
                QuantError::NotWholeBlocks {
                    ty: ty.name(),
                    n: n + 1,
                    block_size: bs
                }
            );
            assert!(e.to_string().contains(name), "{e}");
            assert!(vec_dot_row(ty, &good, &x[..n - 1]).is_err());
        }
    }
}
