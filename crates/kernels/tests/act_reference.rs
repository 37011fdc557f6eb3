//! Activation quantization (`quant::act`) against llama.cpp's reference quantizers
//! (`quantize_row_q8_0_ref`, `_q8_1_ref`, `_q8_K_ref`), called through ctypes by
//! `fixtures/quant/make_dot_refs.py`: the same f32 rows must give the same bytes.
//!
//! The fixture's rows include rounding ties (values on exact half steps), an all-zero row and a
//! row with one large outlier, so the rounding rule (Q8_0/Q8_1: half away from zero; Q8_K: half
//! to even) and the zero-scale case are checked, not just typical data.

use frugal_kernels::cpu::Isa;
use frugal_kernels::quant::{ActFormat, QuantizedActs};
use safetensors::SafeTensors;

#[test]
fn activations_quantize_as_llama_cpp() {
    let dir = frugal_testdata::fixtures_dir().join("quant");
    let bytes = std::fs::read(dir.join("dot_refs.safetensors")).expect("OK: committed fixture");
    let st = SafeTensors::deserialize(&bytes).expect("OK: valid fixture");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("dot_refs.json")).expect("OK: committed fixture"),
    )
    .expect("OK: valid JSON");
    let n = meta["n"].as_u64().expect("n") as usize;
    let mut formats_seen = std::collections::BTreeSet::new();
    for (name, t) in meta["types"].as_object().expect("types") {
        let format = match t["act_format"].as_str().expect("act_format") {
            "Q8_0" => ActFormat::Q8_0,
            "Q8_1" => ActFormat::Q8_1,
            "Q8_K" => ActFormat::Q8K,
            other => panic!("unexpected activation format {other}"),
        };
        formats_seen.insert(format!("{format:?}"));
        let x = st.tensor(&format!("{name}.x")).expect("x");
        let want = st.tensor(&format!("{name}.acts")).expect("acts");
        let xs: Vec<f32> = x
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let act_row = want.shape()[1];
        for (i, (xr, wr)) in xs
            .chunks_exact(n)
            .zip(want.data().chunks_exact(act_row))
            .enumerate()
        {
            // Every ISA's quantizer (scalar reference, AVX2) must give llama.cpp's bytes.
            for isa in Isa::available() {
                let mut a = QuantizedActs::new();
                a.quantize_on(isa, format, xr).expect("whole blocks");
                assert_eq!(a.as_bytes().len(), act_row, "{name} row {i}");
                if a.as_bytes() != wr {
                    let at = a.as_bytes().iter().zip(wr).position(|(p, q)| p != q);
                    panic!(
                        "{name} ({format:?}, {isa:?}) activation row {i} differs from llama.cpp \
                         at byte {at:?}"
                    );
                }
            }
        }
    }
    assert_eq!(formats_seen.len(), 3, "{formats_seen:?}");
}
