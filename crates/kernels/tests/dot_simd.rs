//! Integer dot products of the 32-weight block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL,
//! MXFP4) against Q8_0/Q8_1 activations (`quant::dot::vec_dot`), on every instruction set this
//! CPU has.
//!
//! - Exact integers: with unit scales and integer activations every block term is an integer
//!   and every partial sum stays below 2^24, so every path must return the exact `Σ w_i·x_i`
//!   (computed in i64 from `dequantize_row`): this checks the codes and the integer products
//!   bit for bit, independently of float rounding.
//! - SIMD vs scalar on random blocks (every code pattern, random finite f16 scales and offsets,
//!   random E8M0 exponents) over rows of 1, 2, 3, 7, 13 and 64 blocks (every loop and tail of
//!   every path), from unaligned addresses.
//!   Per block both compute the same exact i32 and the same exact `d_w·d_a`, so block terms
//!   agree to one rounding (the x86 paths fuse the Q4_1/Q5_1 offset product `m·s` into the
//!   add); then the f32 additions are grouped differently (x86: four or eight lanes, then the left-over
//!   blocks). Recursive summation of `n` terms errs by at most `(n−1)·u·Σ|t_b|` (`u = 2^-24`),
//!   so two orders differ by at most `2(n + 4)·u·S` with `S = Σ_b (|t_b| + |m_b·s_b|)`
//!   (`+4` covers the per-term roundings): that is [`order_tolerance`].
//! - Against llama.cpp: `fixtures/quant/dot_refs.safetensors` (`make_dot_refs.py`, ggml through
//!   ctypes) holds weight rows quantized by `ggml_quantize_chunk`, f32 activation rows and
//!   llama.cpp's `vec_dot` of them on its reference-quantized activations. Our quantized
//!   activations must equal llama.cpp's bytes, and every path's dot product must be within
//!   `LLAMA_TOL · Σ_i |w_i·x_i|` of llama.cpp's: its AVX2 kernels scale each i32 *lane*
//!   partial (not each block sum) and accumulate with FMA, so its error is bounded by the sum
//!   of absolute products, not by the block terms.

use frugal_kernels::cpu::Isa;
use frugal_kernels::quant::dot::vec_dot;
use frugal_kernels::quant::{dequantize_row, ActFormat, QuantBlock, QuantType, QuantizedActs};
use frugal_testdata::{f32s_le as f32s, Rng};
use safetensors::SafeTensors;

const LEGACY: [QuantType; 7] = [
    QuantType::Q4_0,
    QuantType::Q4_1,
    QuantType::Q5_0,
    QuantType::Q5_1,
    QuantType::Q8_0,
    QuantType::IQ4NL,
    QuantType::MXFP4,
];

/// Relative tolerance against llama.cpp, of `Σ_i |w_i·x_i|`. Observed maxima are printed with
/// `--nocapture`; a 1024-weight row summed in f32 in any order errs by at most ~1024·u ≈ 6e-5
/// of that sum and in practice by ~√1024·u ≈ 2e-6.
const LLAMA_TOL: f64 = 1e-5;

/// Whether the type has an offset `m` (f16 at byte 2) and so pairs with Q8_1.
fn has_min(ty: QuantType) -> bool {
    matches!(ty, QuantType::Q4_1 | QuantType::Q5_1)
}

/// `nb` random blocks of `ty`: random code bytes; scales (always the first bytes of a block)
/// from `scale`, offsets from `min`.
fn blocks(
    rng: &mut Rng,
    ty: QuantType,
    nb: usize,
    scale: &mut dyn FnMut(&mut Rng) -> u16,
    min: &mut dyn FnMut(&mut Rng) -> u16,
) -> Vec<u8> {
    let ts = ty.type_size();
    let mut row: Vec<u8> = (0..nb * ts).map(|_| rng.next() as u8).collect();
    for b in row.chunks_exact_mut(ts) {
        let s = scale(rng);
        if ty == QuantType::MXFP4 {
            b[0] = s as u8;
        } else {
            b[..2].copy_from_slice(&s.to_le_bytes());
        }
        if has_min(ty) {
            b[2..4].copy_from_slice(&min(rng).to_le_bytes());
        }
    }
    row
}

/// The same bytes at an odd address: blocks are read wherever the file puts them.
fn unaligned(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(0xa5);
    v.extend_from_slice(bytes);
    v
}

/// The activations dequantized (`d·q`), and per block `m_b·s_b` for the offset types (else 0).
fn act_values(acts: &QuantizedActs) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0f32; acts.len()];
    let mut s = Vec::new();
    match acts.format() {
        ActFormat::Q8_0 => {
            for (b, o) in acts.q8_0().iter().zip(out.chunks_exact_mut(32)) {
                b.dequantize(o);
                s.push(0.0);
            }
        }
        ActFormat::Q8_1 => {
            for (b, o) in acts.q8_1().iter().zip(out.chunks_exact_mut(32)) {
                b.dequantize(o);
                s.push(b.s());
            }
        }
        other => panic!("not a legacy activation format: {other:?}"),
    }
    (out, s)
}

/// `S = Σ_b (|t_b| + |m_b·s_b|)` (module doc), with `t_b` the block's dot product of the
/// dequantized weights and activations in f64.
fn block_scale(ty: QuantType, row: &[u8], acts: &QuantizedActs) -> f64 {
    let mut w = vec![0.0f32; acts.len()];
    dequantize_row(ty, row, &mut w).expect("valid row");
    let (x, s) = act_values(acts);
    let ts = ty.type_size();
    w.chunks_exact(32)
        .zip(x.chunks_exact(32))
        .enumerate()
        .map(|(b, (w, x))| {
            let t: f64 = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum();
            let ms = if has_min(ty) {
                let m = half::f16::from_le_bytes([row[b * ts + 2], row[b * ts + 3]]).to_f32();
                (m as f64 * s[b] as f64).abs()
            } else {
                0.0
            };
            t.abs() + ms
        })
        .sum()
}

/// How far two summation orders of `nb` block terms may differ (module doc).
fn order_tolerance(nb: usize, scale: f64) -> f64 {
    2.0 * (nb as f64 + 4.0) * f64::powi(2.0, -24) * scale
}

fn act_format(ty: QuantType) -> ActFormat {
    ty.act_format()
        .expect("legacy types have an activation format")
}

#[test]
fn integer_rows_are_exact_on_every_path() {
    let mut rng = Rng(7);
    let isas = Isa::available();
    eprintln!("instruction sets: {isas:?}");
    for ty in LEGACY {
        for nb in [1, 2, 3, 4, 5, 7, 8, 13, 64] {
            // d_w = 1 (f16 0x3c00; E8M0 128 → 2^0), m = 0: weights are their codes.
            let unit = if ty == QuantType::MXFP4 { 128 } else { 0x3c00 };
            let row = blocks(&mut rng, ty, nb, &mut |_| unit, &mut |_| 0);
            // Integer activations with ±127 in each block: d_a = 127/127 = 1, codes = values.
            let x: Vec<f32> = (0..nb * 32)
                .map(|i| match i % 32 {
                    0 => 127.0 * if rng.next() & 1 == 0 { 1.0 } else { -1.0 },
                    _ => (rng.next() % 255) as f32 - 127.0,
                })
                .collect();
            let acts = QuantizedActs::from_f32(act_format(ty), &x).unwrap();
            let mut w = vec![0.0f32; nb * 32];
            dequantize_row(ty, &row, &mut w).unwrap();
            let exact: i64 = w.iter().zip(&x).map(|(&w, &x)| w as i64 * x as i64).sum();
            let abs: i64 = w
                .iter()
                .zip(&x)
                .map(|(&w, &x)| (w as i64 * x as i64).abs())
                .sum();
            assert!(abs < 1 << 24, "{ty}: partial sums must stay exact in f32");
            let row = unaligned(&row);
            for &isa in &isas {
                let got = vec_dot(isa, ty, &row[1..], &acts).unwrap();
                assert_eq!(got, exact as f32, "{ty} {isa} {nb} blocks");
            }
        }
    }
}

#[test]
fn simd_paths_match_the_scalar_reference() {
    let mut rng = Rng(2026);
    let isas = Isa::available();
    for ty in LEGACY {
        let mut worst = vec![0.0f64; isas.len()];
        for nb in [1, 2, 3, 7, 13, 64] {
            for _ in 0..20 {
                let row = if ty == QuantType::MXFP4 {
                    // E8M0 exponents 2^-20..2^20 (beyond, products overflow or vanish in f32
                    // for llama.cpp as for us).
                    blocks(
                        &mut rng,
                        ty,
                        nb,
                        &mut |r| 107 + (r.next() % 41) as u16,
                        &mut |_| 0,
                    )
                } else {
                    blocks(&mut rng, ty, nb, &mut |r| r.f16_bits(19), &mut |r| {
                        r.f16_bits(19)
                    })
                };
                // Activations of block-varying magnitude.
                let x: Vec<f32> = (0..nb * 32)
                    .map(|i| {
                        let mag = [0.01f32, 1.0, 50.0][(i / 32 + nb) % 3];
                        mag * rng.unit()
                    })
                    .collect();
                let acts = QuantizedActs::from_f32(act_format(ty), &x).unwrap();
                let row = unaligned(&row);
                let scalar = vec_dot(Isa::Scalar, ty, &row[1..], &acts).unwrap();
                let scale = block_scale(ty, &row[1..], &acts);
                let tol = order_tolerance(nb, scale);
                for (k, &isa) in isas.iter().enumerate() {
                    let got = vec_dot(isa, ty, &row[1..], &acts).unwrap();
                    let diff = (got as f64 - scalar as f64).abs();
                    assert!(
                        diff <= tol,
                        "{ty} {isa} {nb} blocks: {got} vs scalar {scalar} (tolerance {tol:e})"
                    );
                    if scale > 0.0 {
                        worst[k] = worst[k].max(diff / scale);
                    }
                }
            }
        }
        let report: Vec<String> = isas
            .iter()
            .zip(&worst)
            .map(|(i, w)| format!("{i} {w:.1e}"))
            .collect();
        eprintln!("{ty}: max |simd − scalar| / S: {}", report.join(", "));
    }
}

#[test]
fn dot_products_match_llama_cpp() {
    let dir = frugal_testdata::fixtures_dir().join("quant");
    let bytes = std::fs::read(dir.join("dot_refs.safetensors")).expect("OK: committed fixture");
    let st = SafeTensors::deserialize(&bytes).expect("OK: valid fixture");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("dot_refs.json")).expect("OK: committed fixture"),
    )
    .expect("OK: valid JSON");
    let n = meta["n"].as_u64().expect("n") as usize;
    let isas = Isa::available();
    for ty in LEGACY {
        let name = ty.name();
        let weights = st.tensor(&format!("{name}.weights")).expect("weights");
        let x = f32s(st.tensor(&format!("{name}.x")).expect("x").data());
        let want_acts = st.tensor(&format!("{name}.acts")).expect("acts");
        let dots = f32s(st.tensor(&format!("{name}.dot")).expect("dot").data());
        let row_bytes = weights.shape()[1];
        let act_rows = x.len() / n;
        let mut worst = 0.0f64;
        for (r, wrow) in weights.data().chunks_exact(row_bytes).enumerate() {
            let mut w = vec![0.0f32; n];
            dequantize_row(ty, wrow, &mut w).unwrap();
            let wrow = unaligned(wrow);
            for (a, xr) in x.chunks_exact(n).enumerate() {
                let acts = QuantizedActs::from_f32(act_format(ty), xr).unwrap();
                assert_eq!(
                    acts.as_bytes(),
                    &want_acts.data()[a * want_acts.shape()[1]..(a + 1) * want_acts.shape()[1]],
                    "{name}: activation row {a} quantized unlike llama.cpp"
                );
                let (xq, _) = act_values(&acts);
                let scale: f64 = w
                    .iter()
                    .zip(&xq)
                    .map(|(&w, &x)| (w as f64 * x as f64).abs())
                    .sum();
                let want = dots[r * act_rows + a];
                for &isa in &isas {
                    let got = vec_dot(isa, ty, &wrow[1..], &acts).unwrap();
                    let diff = (got as f64 - want as f64).abs();
                    assert!(
                        diff <= LLAMA_TOL * scale,
                        "{name} {isa} row {r} acts {a}: {got} vs llama.cpp {want} (scale {scale:e})"
                    );
                    if scale > 0.0 {
                        worst = worst.max(diff / scale);
                    }
                }
            }
        }
        eprintln!("{name}: max |ours − llama.cpp| / Σ|w·x| = {worst:.2e} over {isas:?}");
    }
}
