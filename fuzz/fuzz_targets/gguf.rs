//! Fuzzes the GGUF header parser: arbitrary bytes must give `Ok` or `Err`, never a panic, an
//! abort, a stack overflow or an allocation beyond libFuzzer's memory limit. On `Ok`, the
//! parsed header must be consistent with the bytes.
#![no_main]

use frugal_formats::gguf::parse_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse_header(data) else {
        return;
    };
    assert!(h.version == 2 || h.version == 3);
    assert!(h.alignment.is_power_of_two());
    assert!(h.header_len <= data.len() as u64);
    assert_eq!(h.data_offset % h.alignment, 0);
    for t in &h.tensors {
        // The parser promised these bytes exist: slicing must not panic.
        let start = (h.data_offset + t.offset) as usize;
        let bytes = &data[start..start + t.nbytes];
        assert_eq!(bytes.len(), t.nbytes);
        // Every order of multiplying the dimensions must be overflow-free (debug assertions
        // are on in fuzz builds), and the size must follow from the type and shape.
        let numel: usize = t.shape().iter().product();
        let numel_rev: usize = t.shape().iter().rev().product();
        assert_eq!(numel, numel_rev);
        let row = t.ne.first().copied().unwrap_or(1) as usize;
        let rest: usize = t.ne.iter().skip(1).map(|&d| d as usize).product();
        assert_eq!(t.dtype.row_bytes(row).map(|r| r * rest), Some(t.nbytes));
    }
    // Exercise the getters and Display on whatever was parsed.
    for (k, v) in h.metadata.iter() {
        let _ = (
            h.metadata.get_u64(k),
            h.metadata.get_i64(k),
            h.metadata.get_f64(k),
        );
        let _ = (
            h.metadata.get_str_array(k),
            h.metadata.get_f32_array(k),
            h.metadata.get_i64_array(k),
        );
        let _ = v.to_string();
    }
});
