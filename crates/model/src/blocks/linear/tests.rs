//! `Linear`: float and FP8 storage decoded exactly, quantized rows against their dequantized
//! product, the same rows on any thread count, and bad tensors named.

use std::collections::HashMap;

use frugal_kernels::quant::QuantizedActs;
use half::{bf16, f16};

use super::*;

/// Tensors held in memory (also the fused-MLP tests' source).
#[derive(Default)]
pub(crate) struct Mem(HashMap<String, (DType, Vec<usize>, Vec<u8>)>);

impl Mem {
    pub(crate) fn put(&mut self, name: &str, dtype: DType, shape: &[usize], data: Vec<u8>) {
        self.0.insert(name.into(), (dtype, shape.to_vec(), data));
    }
}

impl TensorSource for Mem {
    fn tensor_infos(&self) -> Vec<frugal_formats::TensorInfo> {
        Vec::new()
    }
    fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.0.get_key_value(name).map(|(k, (d, s, b))| TensorView {
            name: k,
            dtype: *d,
            shape: s.clone(),
            data: b,
        })
    }
}

/// `Mem` asking for exact activations.
struct Exact<'m>(&'m Mem);

impl<'m> Weights<'m> for Exact<'m> {
    fn tensor(&self, name: &str) -> Option<TensorView<'m>> {
        self.0.tensor(name)
    }
    fn exact_activations(&self) -> bool {
        true
    }
}

/// Pseudo-random values in [-scale, scale), a different sequence per `seed` (also the
/// attention tests' inputs).
pub(crate) fn values(seed: usize, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i + seed * 7_919_993).wrapping_mul(2_654_435_761) >> 7;
            ((h % 2000) as f32 / 1000.0 - 1.0) * scale
        })
        .collect()
}

/// A deterministic pseudo-random weight in [-1, 1).
fn w(i: usize) -> f32 {
    ((i.wrapping_mul(2_654_435_761) >> 7) % 2000) as f32 / 1000.0 - 1.0
}

fn naive(wts: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let t = x.len() / cols;
    let mut y = vec![0.0; t * rows];
    for ti in 0..t {
        for r in 0..rows {
            y[ti * rows + r] = matmul::dot(
                &wts[r * cols..(r + 1) * cols],
                &x[ti * cols..(ti + 1) * cols],
            );
        }
    }
    y
}

#[test]
fn float_types_decode_exactly() {
    let (rows, cols) = (5, 19);
    // Values exact in every type, so all three must give the same product.
    let vals: Vec<f32> = (0..rows * cols)
        .map(|i| bf16::from_f32(w(i)).to_f32())
        .collect();
    let vals: Vec<f32> = vals.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let mut m = Mem::default();
    m.put(
        "f32",
        DType::F32,
        &[rows, cols],
        vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    m.put(
        "bf16",
        DType::BF16,
        &[rows, cols],
        vals.iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
    );
    m.put(
        "f16",
        DType::F16,
        &[rows, cols],
        vals.iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
    );
    let x: Vec<f32> = (0..3 * cols).map(|i| w(i + 7)).collect();
    let want = naive(&vals, &x, rows, cols);
    for name in ["f32", "bf16", "f16"] {
        let lin = Linear::load(&&m, name, rows, cols, 128).unwrap();
        assert_eq!(lin.forward(&x, 1), want, "{name}");
        // A block of rows alone: those columns of the naive product.
        let part = lin.forward_rows(1..4, &x);
        for ti in 0..3 {
            assert_eq!(
                part[ti * 3..(ti + 1) * 3],
                want[ti * rows + 1..ti * rows + 4],
                "{name} rows 1..4"
            );
        }
    }
}

#[test]
fn fp8_partial_blocks() {
    // 5 x 7 with 4 x 4 blocks: scale is 2 x 2, edge blocks partial.
    let (rows, cols, b) = (5, 7, 4);
    let bytes: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 120) as u8).collect();
    let scales = [0.5f32, 2.0, -1.0, 0.25];
    let mut m = Mem::default();
    m.put("w", DType::F8E4M3, &[rows, cols], bytes.clone());
    m.put(
        "w_scale_inv",
        DType::F32,
        &[2, 2],
        scales.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    m.put("v", DType::F8E4M3, &[rows, cols], bytes.clone());
    m.put(
        "v_scale_inv",
        DType::BF16,
        &[2, 2],
        scales
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
    );
    let want = |r: usize, c: usize| {
        convert::f8e4m3_to_f32(bytes[r * cols + c]) * scales[(r / b) * 2 + c / b]
    };
    for name in ["w", "v"] {
        let lin = Linear::load(&&m, name, rows, cols, b).unwrap();
        for range in [0..rows, 3..5, 4..5] {
            let mut got = vec![0.0; range.len() * cols];
            lin.decode_rows(range.clone(), &mut got);
            for (i, r) in range.enumerate() {
                for c in 0..cols {
                    assert_eq!(got[i * cols + c], want(r, c), "{name} ({r}, {c})");
                }
            }
        }
    }
    // A missing scale tensor is named.
    let mut m2 = Mem::default();
    m2.put("w", DType::F8E4M3, &[rows, cols], bytes);
    let err = Linear::load(&&m2, "w", rows, cols, b).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name } if name == "w_scale_inv"),
        "{err}"
    );
}

#[test]
fn threads_split_rows_identically() {
    let (rows, cols) = (301, 1024);
    let vals: Vec<f32> = (0..rows * cols).map(w).collect();
    let mut m = Mem::default();
    m.put(
        "w",
        DType::F32,
        &[rows, cols],
        vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let lin = Linear::load(&&m, "w", rows, cols, 128).unwrap();
    let x: Vec<f32> = (0..2 * cols).map(|i| w(i + 3)).collect();
    assert!(2 * rows * cols >= PARALLEL_MIN_WORK);
    let one = lin.forward(&x, 1);
    assert_eq!(one, naive(&vals, &x, rows, cols));
    for threads in [2, 5, 16, 1000] {
        assert_eq!(lin.forward(&x, threads), one, "{threads} threads");
    }
}

#[test]
fn bad_tensors_are_errors() {
    let mut m = Mem::default();
    m.put("short", DType::F32, &[2, 2], vec![0; 15]);
    m.put("iq2", DType::IQ2XXS, &[2, 256], vec![0; 132]);
    m.put("shape", DType::F32, &[2, 3], vec![0; 24]);
    let err = Linear::load(&&m, "short", 2, 2, 128).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::WrongByteSize {
                expected: 16,
                found: 15,
                ..
            }
        ),
        "{err}"
    );
    let err = Linear::load(&&m, "iq2", 2, 256, 128).unwrap_err();
    assert!(err.to_string().contains("iq2"), "{err}");
    assert!(
        matches!(
            err,
            ModelError::UnsupportedDtype {
                dtype: DType::IQ2XXS,
                ..
            }
        ),
        "{err}"
    );
    let err = Linear::load(&&m, "shape", 3, 2, 128).unwrap_err();
    assert!(matches!(err, ModelError::WrongShape { .. }), "{err}");
    assert!(err.to_string().contains("shape"), "{err}");
    let err = Linear::load(&&m, "nope", 3, 2, 128).unwrap_err();
    assert!(err.to_string().contains("missing tensor nope"), "{err}");
}

#[test]
fn quantized_rows_match_dequantized_product() {
    // Q8_0 blocks: f16 scale then 32 int8 weights.
    let (rows, cols) = (5, 64);
    let mut bytes = Vec::new();
    for b in 0..rows * cols / 32 {
        bytes.extend_from_slice(&f16::from_f32(0.01 * (b + 1) as f32).to_le_bytes());
        bytes.extend((0..32).map(|i| ((i * 7 + b * 3) % 255) as u8));
    }
    let mut wf = vec![0.0f32; rows * cols];
    for (r, o) in wf.chunks_exact_mut(cols).enumerate() {
        let rb = 34 * cols / 32;
        quant::dequantize_row(QuantType::Q8_0, &bytes[r * rb..(r + 1) * rb], o).unwrap();
    }
    let mut m = Mem::default();
    m.put("q8", DType::Q8_0, &[rows, cols], bytes.clone());
    m.put("q8short", DType::Q8_0, &[rows, cols], bytes[1..].to_vec());
    let x: Vec<f32> = (0..3 * cols).map(w).collect();

    // Exact activations: the product of the dequantized weights with x.
    let lin = Linear::load(&Exact(&m), "q8", rows, cols, 128).unwrap();
    let want = naive(&wf, &x, rows, cols);
    let got = lin.forward(&x, 2);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }

    // Default: x rounded to Q8_0 first, so the product of the dequantized weights with the
    // dequantized activations (and a Q8_0 step away from the exact one).
    let lin = Linear::load(&&m, "q8", rows, cols, 128).unwrap();
    let mut xq = vec![0.0f32; x.len()];
    for (xr, o) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(cols)) {
        let a = QuantizedActs::from_f32(ActFormat::Q8_0, xr).unwrap();
        for (b, o) in a.q8_0().iter().zip(o.chunks_exact_mut(32)) {
            quant::QuantBlock::dequantize(b, o);
        }
    }
    let want_q = naive(&wf, &xq, rows, cols);
    let got = lin.forward(&x, 2);
    let mut moved = 0.0f32;
    for ((a, b), e) in got.iter().zip(&want_q).zip(&want) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        moved = moved.max((a - e).abs());
    }
    assert!(moved > 0.0, "activations were not quantized");
    // Rows 2..5 alone quantize x the same way: the same columns of the Q8_0-step product.
    let part = lin.forward_rows(2..5, &x);
    for ti in 0..3 {
        for (a, b) in part[ti * 3..(ti + 1) * 3]
            .iter()
            .zip(&want_q[ti * rows + 2..ti * rows + 5])
        {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
    let mut dec = vec![0.0f32; 2 * cols];
    lin.decode_rows(2..4, &mut dec);
    assert_eq!(dec, wf[2 * cols..4 * cols]);
    let err = Linear::load(&&m, "q8short", rows, cols, 128).unwrap_err();
    assert!(matches!(err, ModelError::WrongByteSize { .. }), "{err}");
}
