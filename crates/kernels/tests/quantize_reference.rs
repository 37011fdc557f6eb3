//! f32 → quantized blocks against llama.cpp's own quantizers
//! (`fixtures/quant/quantize_refs.safetensors`, written by `fixtures/quant/make_quantize_refs.py`
//! through `ggml_quantize_chunk` of llama.cpp's ggml library, no importance matrix).
//!
//! Every type frugal quantizes must give the same bytes as llama.cpp on every row (normal data
//! at several scales, heavy tails, one-signed rows, constants, rounding ties, outliers, zero
//! and sub-epsilon sub-blocks). A mismatch names the type, row and first differing block.

use frugal_kernels::quant::quantize::{quantize_row, quantize_rows};
use frugal_kernels::quant::QuantType;
use safetensors::SafeTensors;

const TYPES: [&str; 14] = [
    "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    "IQ4_NL", "IQ4_XS",
];

fn fixture() -> Vec<u8> {
    let path = frugal_testdata::fixtures_dir().join("quant/quantize_refs.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{} is committed: {e}", path.display()))
}

#[test]
fn every_type_matches_llama_cpp_bit_for_bit() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).expect("fixture parses");
    let input = st.tensor("input").expect("input");
    let (rows, n) = (input.shape()[0], input.shape()[1]);
    let x: Vec<f32> = input
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut failures = Vec::new();
    for name in TYPES {
        let ty = QuantType::from_name(name).expect("a ggml type name");
        let want = st.tensor(name).expect("every type is in the fixture");
        let row_bytes = ty.row_bytes(n).unwrap();
        assert_eq!(want.data().len(), rows * row_bytes, "{name}");
        for r in 0..rows {
            let mut got = vec![0u8; row_bytes];
            quantize_row(ty, &x[r * n..(r + 1) * n], &mut got).unwrap();
            let exp = &want.data()[r * row_bytes..(r + 1) * row_bytes];
            if got != exp {
                let ts = ty.type_size();
                let b = (0..row_bytes / ts)
                    .find(|&b| got[b * ts..(b + 1) * ts] != exp[b * ts..(b + 1) * ts])
                    .unwrap_or(0);
                failures.push(format!(
                    "{name} row {r} block {b}:\n  ours  {:?}\n  llama {:?}",
                    &got[b * ts..(b + 1) * ts],
                    &exp[b * ts..(b + 1) * ts]
                ));
            }
        }
        // The threaded driver writes the same bytes.
        let mut all = vec![0u8; rows * row_bytes];
        quantize_rows(ty, &x, n, &mut all, 3).unwrap();
        if failures.is_empty() {
            assert_eq!(all, want.data(), "{name}: quantize_rows");
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
