//! Integer dot products of Q2_K … Q6_K and IQ4_XS rows with Q8_K activations (`quant::dot`).
//!
//! - Every available ISA against the scalar reference, on seeded random blocks (every code
//!   and scale pattern, finite f16 super-scales of both signs) and random activations, rows of
//!   1, 2, 3, 8 and 11 super-blocks (the x86 paths reduce 8 blocks at a time), from aligned and unaligned addresses. Tolerance: **none**.
//!   Each path reduces a block's integer sums to one exact i32 (`|isum| < 2^28`) and then runs
//!   the same f32 expression in the same block order (see `quant/dot/kquants/mod.rs`), so the
//!   results must be equal bit for bit.
//! - The scalar reference against the f64 dot product of the dequantized weights (checked bit
//!   for bit against gguf-py by `quant_reference.rs`) and dequantized activations, within
//!   `REF_TOL · Σ_i |w_i·a_i|`: the f32 steps are two products and a difference per block and
//!   one sum over the blocks (≲ 10 roundings of 2^-24 relative to that bound), while the f32
//!   dequantized weights `(d·sc)·q − dmin·m` carry their own rounding relative to the terms
//!   `|d·sc·q| + |dmin·m|`, which for random Q2_K/Q4_K bytes can be ~30× larger than `|w|`.
//! - Against llama.cpp (`fixtures/quant/dot_refs.safetensors`, made by
//!   `fixtures/quant/make_dot_refs.py` through ctypes into libggml-cpu): our Q8_K bytes of the
//!   fixture's activation rows equal llama.cpp's `quantize_row_q8_K_ref` bytes, and our dot
//!   product (every ISA) is within `LLAMA_TOL · Σ_i |w_i·a_i|` of llama.cpp's `vec_dot`.
//!   The integers are the same; llama.cpp's SIMD kernels keep per-lane f32 partial sums and
//!   fuse multiply-adds, so the float results differ by the rounding of ≤ 4 blocks × 8 lanes of
//!   summation: ≤ ~40·2^-24 ≈ 2.4e-6 relative to the sum of magnitudes (observed: 4e-7).

use frugal_kernels::cpu::Isa;
use frugal_kernels::quant::{
    dequantize_row, dot::vec_dot, ActFormat, QuantBlock, QuantType, QuantizedActs,
};
use frugal_testdata::{f32s_le as f32s, Rng};
use safetensors::SafeTensors;

const TYPES: [QuantType; 6] = [
    QuantType::Q2K,
    QuantType::Q3K,
    QuantType::Q4K,
    QuantType::Q5K,
    QuantType::Q6K,
    QuantType::IQ4XS,
];

/// See the module docs.
const REF_TOL: f64 = 1e-4;
/// See the module docs.
const LLAMA_TOL: f64 = 1e-5;

/// Byte offsets of the f16 super-scales (`d`, and `dmin` where present) in a block.
fn scale_offsets(ty: QuantType) -> &'static [usize] {
    match ty {
        QuantType::Q2K => &[80, 82],
        QuantType::Q3K => &[108],
        QuantType::Q4K | QuantType::Q5K => &[0, 2],
        QuantType::Q6K => &[208],
        QuantType::IQ4XS => &[0],
        _ => unreachable!(),
    }
}

/// `nb` random blocks of `ty`, every byte random except finite f16 super-scales.
fn random_row(rng: &mut Rng, ty: QuantType, nb: usize) -> Vec<u8> {
    let ts = ty.type_size();
    let mut row: Vec<u8> = (0..nb * ts).map(|_| rng.next() as u8).collect();
    for b in row.chunks_exact_mut(ts) {
        for &o in scale_offsets(ty) {
            b[o..o + 2].copy_from_slice(&rng.f16_bits(17).to_le_bytes());
        }
    }
    row
}

/// Activations of mixed magnitude: mostly ±1, some blocks scaled up or down, the odd outlier.
fn random_acts(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
    for (b, xb) in x.chunks_exact_mut(256).enumerate() {
        let s = [1.0, 0.01, 40.0][b % 3];
        xb.iter_mut().for_each(|v| *v *= s);
        xb[(rng.next() % 256) as usize] *= 20.0;
    }
    x
}

fn dequantized(ty: QuantType, row: &[u8], n: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; n];
    dequantize_row(ty, row, &mut w).expect("valid row");
    w
}

fn act_values(a: &QuantizedActs) -> Vec<f32> {
    let mut v = vec![0.0f32; a.len()];
    for (b, o) in a.q8k().iter().zip(v.chunks_exact_mut(256)) {
        b.dequantize(o);
    }
    v
}

#[test]
fn every_isa_equals_scalar_bit_for_bit() {
    let isas = Isa::available();
    eprintln!("ISAs: {isas:?}");
    let mut rng = Rng(0x6b71_7561_6e74);
    let mut compared = 0;
    for ty in TYPES {
        for nb in [1usize, 2, 3, 8, 11] {
            for _ in 0..12 {
                let n = nb * 256;
                let row = random_row(&mut rng, ty, nb);
                let acts = QuantizedActs::from_f32(ActFormat::Q8K, &random_acts(&mut rng, n))
                    .expect("whole blocks");
                let want = vec_dot(Isa::Scalar, ty, &row, &acts).expect("supported");
                assert!(want.is_finite(), "{ty}: {want}");
                // Unaligned copy of the row: loads must not assume alignment.
                let mut shifted = vec![0u8; row.len() + 1];
                shifted[1..].copy_from_slice(&row);
                for &isa in &isas {
                    for r in [&row[..], &shifted[1..]] {
                        let got = vec_dot(isa, ty, r, &acts).expect("supported");
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{ty} {isa} nb={nb}: {got} vs {want}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared >= TYPES.len() * 5 * 12 * 2);
}

/// The integer limits: every code and scale byte at its extreme (all bits set or clear) with
/// activations whose codes are all ±127 (or all +127), where an intermediate that overflowed
/// i16 (`pmaddubsw` pairs, `pmaddwd` with the scales) or i32 would show. Bit-exact against
/// scalar, and scalar within `REF_TOL` of the f64 dot product.
#[test]
fn extreme_codes_and_activations() {
    let mut rng = Rng(0x0065_7874_7265_6d65);
    for ty in TYPES {
        for fill in [0x00u8, 0xff, 0x80, 0x7f, 0x55, 0xaa] {
            let nb = 3;
            let mut row = vec![fill; nb * ty.type_size()];
            for b in row.chunks_exact_mut(ty.type_size()) {
                for &o in scale_offsets(ty) {
                    b[o..o + 2].copy_from_slice(&half::f16::from_f32(-0.75).to_le_bytes());
                }
            }
            let n = nb * 256;
            let signs: Vec<f32> = (0..n)
                .map(|_| if rng.next() & 1 == 0 { 1.0 } else { -1.0 })
                .collect();
            for x in [signs, vec![1.0f32; n], vec![-1.0f32; n]] {
                let acts = QuantizedActs::from_f32(ActFormat::Q8K, &x).expect("whole blocks");
                assert!(acts
                    .q8k()
                    .iter()
                    .all(|b| b.qs.iter().all(|&q| q.abs() == 127)));
                let want = vec_dot(Isa::Scalar, ty, &row, &acts).expect("supported");
                for isa in Isa::available() {
                    let got = vec_dot(isa, ty, &row, &acts).expect("supported");
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} {isa} fill {fill:#x}: {got} vs {want}"
                    );
                }
                let (w, a) = (dequantized(ty, &row, n), act_values(&acts));
                let exact: f64 = w.iter().zip(&a).map(|(&w, &a)| w as f64 * a as f64).sum();
                let mag: f64 = w
                    .iter()
                    .zip(&a)
                    .map(|(&w, &a)| (w as f64 * a as f64).abs())
                    .sum();
                let err = (want as f64 - exact).abs();
                assert!(
                    err <= REF_TOL * mag,
                    "{ty} fill {fill:#x}: {want} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn scalar_matches_dequantized_f64_dot() {
    let mut rng = Rng(0x7265_6600);
    let mut worst = 0.0f64;
    for ty in TYPES {
        for nb in [1usize, 2, 3, 8, 11] {
            for _ in 0..8 {
                let n = nb * 256;
                let row = random_row(&mut rng, ty, nb);
                let acts = QuantizedActs::from_f32(ActFormat::Q8K, &random_acts(&mut rng, n))
                    .expect("whole blocks");
                let (w, a) = (dequantized(ty, &row, n), act_values(&acts));
                let exact: f64 = w.iter().zip(&a).map(|(&w, &a)| w as f64 * a as f64).sum();
                let mag: f64 = w
                    .iter()
                    .zip(&a)
                    .map(|(&w, &a)| (w as f64 * a as f64).abs())
                    .sum();
                let got = vec_dot(Isa::Scalar, ty, &row, &acts).expect("supported") as f64;
                let err = (got - exact).abs() / mag.max(f64::MIN_POSITIVE);
                worst = worst.max(err);
                assert!(
                    err <= REF_TOL,
                    "{ty} nb={nb}: {got} vs {exact} (rel {err:e})"
                );
            }
        }
    }
    eprintln!("worst relative error vs dequantized f64: {worst:e}");
}

#[test]
fn matches_llama_cpp_vec_dot() {
    let dir = frugal_testdata::fixtures_dir().join("quant");
    let bytes = std::fs::read(dir.join("dot_refs.safetensors")).expect("OK: committed fixture");
    let st = SafeTensors::deserialize(&bytes).expect("OK: valid fixture");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("dot_refs.json")).expect("OK: committed fixture"),
    )
    .expect("OK: valid JSON");
    let n = meta["n"].as_u64().expect("n") as usize;
    let mut worst = 0.0f64;
    for ty in TYPES {
        let name = ty.name();
        let weights = st.tensor(&format!("{name}.weights")).expect("weights");
        let x = f32s(st.tensor(&format!("{name}.x")).expect("x").data());
        let want_acts = st.tensor(&format!("{name}.acts")).expect("acts");
        let dots = f32s(st.tensor(&format!("{name}.dot")).expect("dot").data());
        let rb = weights.shape()[1];
        let n_acts = x.len() / n;
        let ab = want_acts.shape()[1];
        let mut compared = 0;
        for (ai, xr) in x.chunks_exact(n).enumerate() {
            let acts = QuantizedActs::from_f32(ActFormat::Q8K, xr).expect("whole blocks");
            assert_eq!(
                acts.as_bytes(),
                &want_acts.data()[ai * ab..(ai + 1) * ab],
                "{name} acts {ai}"
            );
            let a = act_values(&acts);
            for (ri, row) in weights.data().chunks_exact(rb).enumerate() {
                let want = dots[ri * n_acts + ai] as f64;
                // Σ_i |w_i·a_i| bounds the magnitude of every partial sum, in any order.
                let w = dequantized(ty, row, n);
                let mag: f64 = w
                    .chunks_exact(256)
                    .zip(a.chunks_exact(256))
                    .map(|(w, a)| {
                        w.iter()
                            .zip(a)
                            .map(|(&w, &a)| (w as f64 * a as f64).abs())
                            .sum::<f64>()
                    })
                    .sum();
                for isa in Isa::available() {
                    let got = vec_dot(isa, ty, row, &acts).expect("supported") as f64;
                    let err = (got - want).abs();
                    let rel = if mag > 0.0 { err / mag } else { err };
                    worst = worst.max(rel);
                    assert!(
                        rel <= LLAMA_TOL,
                        "{name} {isa} row {ri} acts {ai}: {got} vs llama.cpp {want} (rel {rel:e})"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared >= 4 * n_acts, "{name}: {compared}");
    }
    eprintln!("worst relative difference from llama.cpp: {worst:e}");
}

/// F32, F16 and BF16 rows with f32 activations: every ISA within `FLOAT_TOL · Σ|w_i·x_i|` of
/// the f64 dot product of the exactly converted weights (and so of the scalar reference).
/// Conversions are exact on every path (F16 includes subnormals here); what differs is the f32
/// summation order: 4 vector accumulators plus a horizontal sum vs one running sum, each
/// bounded by ~n·2^-24 of the magnitude sum and in practice ~√n·2^-24 (n ≤ 2048).
#[test]
fn float_rows_on_every_isa() {
    const FLOAT_TOL: f64 = 2e-5;
    let mut rng = Rng(0x0066_6c6f_6174);
    let mut worst = 0.0f64;
    for ty in [QuantType::F32, QuantType::F16, QuantType::BF16] {
        // Lengths that end in every tail position of the 32- and 64-wide steps.
        for n in [1usize, 7, 31, 64, 100, 257, 1000, 2048] {
            let w: Vec<f32> = (0..n).map(|_| rng.unit() * 4.0).collect();
            let x: Vec<f32> = (0..n).map(|_| rng.unit() * 3.0).collect();
            let mut row = Vec::with_capacity(n * 4);
            for (i, &v) in w.iter().enumerate() {
                match ty {
                    QuantType::F32 => row.extend_from_slice(&v.to_le_bytes()),
                    // Every 5th value an f16 subnormal (|v| < 2^-14).
                    QuantType::F16 => {
                        let v = if i % 5 == 0 { v * 1e-5 } else { v };
                        row.extend_from_slice(&half::f16::from_f32(v).to_le_bytes())
                    }
                    _ => row.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                }
            }
            let wf = dequantized(ty, &row, n);
            let exact: f64 = wf.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
            let mag: f64 = wf
                .iter()
                .zip(&x)
                .map(|(&w, &x)| (w as f64 * x as f64).abs())
                .sum();
            let acts = QuantizedActs::from_f32(ActFormat::F32, &x).expect("f32");
            for isa in Isa::available() {
                let got = vec_dot(isa, ty, &row, &acts).expect("supported") as f64;
                let rel = (got - exact).abs() / mag.max(f64::MIN_POSITIVE);
                worst = worst.max(rel);
                assert!(
                    rel <= FLOAT_TOL,
                    "{ty} {isa} n={n}: {got} vs {exact} (rel {rel:e})"
                );
            }
        }
    }
    eprintln!("worst relative float error: {worst:e}");
}
