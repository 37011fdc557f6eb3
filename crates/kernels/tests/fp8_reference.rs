//! FP8 e4m3 decoding against PyTorch's `float8_e4m3fn` (fixtures/kernels/fp8_e4m3fn.json,
//! made by fixtures/kernels/make_fp8_table.py).

use frugal_kernels::convert::{bf16_bytes_to_f32, f8e4m3_to_f32};

#[test]
fn all_256_fp8_values_match_torch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/kernels/fp8_e4m3fn.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture fp8_e4m3fn.json is committed");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let values = json["values"].as_array().expect("values array");
    assert_eq!(values.len(), 256);
    for (byte, want) in values.iter().enumerate() {
        let got = f8e4m3_to_f32(byte as u8);
        match want.as_f64() {
            None => assert!(got.is_nan(), "byte {byte:#04x}: want NaN, got {got}"),
            Some(w) => assert_eq!(got, w as f32, "byte {byte:#04x}"),
        }
    }
}

#[test]
fn bf16_is_the_top_half_of_f32() {
    let x = [1.0f32, -2.5, 3.140625, 0.0];
    let bytes: Vec<u8> = x
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let mut out = [0.0f32; 4];
    bf16_bytes_to_f32(&bytes, &mut out);
    assert_eq!(out, x);
}
