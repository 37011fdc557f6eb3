//! Quantized rows of real llama.cpp-made GGUF files (`fixtures/gguf/`, see its README) against
//! gguf-py's dequantization of them (`*.dequant.safetensors`: the first 8 rows of the smallest
//! tensor of each non-F32 type: Q8_0, Q5_0, Q5_1, Q4_K, Q6_K, F16, BF16).
//!
//! The raw rows are read from the GGUF with frugal-formats; dequantization must equal gguf-py's
//! bit for bit, and `vec_dot_row` must be within `1e-6 · Σ|x|·max|w|` of the f64 dot product.
//! Also checks that every frugal-formats GGUF type maps to a [`QuantType`] with the same name,
//! block size and block bytes.

use frugal_formats::gguf::GgufFile;
use frugal_formats::{DType, TensorSource};
use frugal_kernels::quant::{dequantize_row, vec_dot_row, QuantType};
use safetensors::SafeTensors;

#[test]
fn formats_dtypes_map_to_quant_types() {
    for dt in DType::all() {
        let Some(id) = dt.ggml_id() else { continue };
        match QuantType::from_ggml_id(id) {
            Some(qt) => {
                assert_eq!(qt.name(), dt.name());
                assert_eq!(qt.block_size(), dt.block_size(), "{qt}");
                assert_eq!(qt.type_size(), dt.type_size(), "{qt}");
            }
            // Integer and f64 tensors are not weight types.
            None => assert!(
                matches!(
                    dt,
                    DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::F64
                ),
                "{dt:?}"
            ),
        }
    }
}

#[test]
fn llama_cpp_rows_match_gguf_py() {
    let root = frugal_testdata::fixtures_dir().join("gguf");
    let mut types_seen = std::collections::BTreeSet::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("OK because fixtures/gguf is committed")
        .map(|e| e.expect("OK: readable directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut jsons: Vec<_> = std::fs::read_dir(&dir)
            .expect("OK: listed above")
            .map(|e| e.expect("OK: readable entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        jsons.sort();
        for json_path in jsons {
            let text = std::fs::read_to_string(&json_path).expect("OK: committed JSON");
            let json: serde_json::Value = serde_json::from_str(&text).expect("OK: valid JSON");
            let Some(samples) = json.get("dequant_samples") else {
                continue;
            };
            let gguf_path = json_path.with_extension("gguf");
            if !gguf_path.exists() {
                continue; // Some fixtures commit only logits (README: "GGUF committed").
            }
            let gguf = GgufFile::open(&gguf_path)
                .unwrap_or_else(|e| panic!("{}: {e}", gguf_path.display()));
            let st_path = dir.join(samples["file"].as_str().expect("OK: file name string"));
            let st_bytes = std::fs::read(&st_path).expect("OK: committed samples");
            let st = SafeTensors::deserialize(&st_bytes).expect("OK: safetensors file");
            let types = samples["types"].as_object().expect("OK: name → type map");
            for (tensor, ty_name) in types {
                let ty_name = ty_name.as_str().expect("OK: type name string");
                let ty = QuantType::from_name(ty_name)
                    .unwrap_or_else(|| panic!("unknown type {ty_name}"));
                let view = gguf
                    .tensor(tensor)
                    .unwrap_or_else(|| panic!("{tensor} in {}", gguf_path.display()));
                assert_eq!(view.dtype.name(), ty_name, "{tensor}");
                let want_view = st
                    .tensor(tensor)
                    .expect("OK: sample stored under the tensor name");
                let want: Vec<f32> = want_view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let ne0 = *view
                    .shape
                    .last()
                    .expect("OK: tensors have at least one dimension");
                let rows = want.len() / ne0;
                let row_bytes = ty
                    .row_bytes(ne0)
                    .expect("OK: llama.cpp rows are whole blocks");
                let mut worst_dot = 0.0f64;
                for r in 0..rows {
                    let src = &view.data[r * row_bytes..(r + 1) * row_bytes];
                    let mut got = vec![f32::NAN; ne0];
                    dequantize_row(ty, src, &mut got).unwrap_or_else(|e| panic!("{tensor}: {e}"));
                    let w = &want[r * ne0..(r + 1) * ne0];
                    for (i, (g, w)) in got.iter().zip(w).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            w.to_bits(),
                            "{tensor} row {r} [{i}]: {g} vs gguf-py {w}"
                        );
                    }
                    let x: Vec<f32> = (0..ne0)
                        .map(|i| ((i * 37 + r * 11) % 19) as f32 / 9.0 - 1.0)
                        .collect();
                    let fused =
                        vec_dot_row(ty, src, &x).unwrap_or_else(|e| panic!("{tensor}: {e}"));
                    let exact: f64 = w.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
                    let scale = x.iter().map(|x| x.abs() as f64).sum::<f64>()
                        * w.iter().fold(0.0f64, |m, w| m.max(w.abs() as f64));
                    worst_dot = worst_dot.max((fused as f64 - exact).abs() / scale);
                }
                println!(
                    "{}: {tensor} ({ty_name}, {rows}×{ne0}) bit-exact; vec_dot error {worst_dot:.2e}",
                    gguf_path.file_name().expect("OK: a file").to_string_lossy()
                );
                assert!(worst_dot <= 1e-6, "{tensor}: vec_dot error {worst_dot:e}");
                types_seen.insert(ty_name.to_string());
            }
        }
    }
    let want = ["BF16", "F16", "Q4_K", "Q5_0", "Q5_1", "Q6_K", "Q8_0"];
    for t in want {
        assert!(
            types_seen.contains(t),
            "no llama.cpp sample of {t} found (seen {types_seen:?})"
        );
    }
}
