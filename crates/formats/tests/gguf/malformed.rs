//! Malformed input: every failure is an `Err` naming what is wrong, never a panic.

use frugal_formats::gguf::{parse_header, GgufError, GgufFile, MAX_ARRAY_DEPTH};

use super::support::{fixture, gguf_str, Builder};

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

fn err(bytes: &[u8]) -> GgufError {
    match parse_header(bytes) {
        Ok(h) => panic!(
            "expected an error, parsed {} keys and {} tensors",
            h.metadata.len(),
            h.tensors.len()
        ),
        Err(e) => e,
    }
}

/// Every prefix shorter than the header plus all tensor data fails; longer prefixes (cutting
/// only trailing padding) still parse.
#[test]
fn every_truncation_fails() {
    for name in [
        "all_types.gguf",
        "align64.gguf",
        "no_tensors.gguf",
        "split-00001-of-00003.gguf",
    ] {
        let bytes = fixture_bytes(name);
        let h = parse_header(&bytes).expect("fixture parses");
        let needed = h
            .tensors
            .iter()
            .map(|t| h.data_offset + t.offset + t.nbytes as u64)
            .max()
            .unwrap_or(h.header_len) as usize;
        for len in 0..bytes.len() {
            let r = parse_header(&bytes[..len]);
            if len < needed {
                assert!(r.is_err(), "{name}: prefix of {len} bytes parsed");
            } else {
                assert!(
                    r.is_ok(),
                    "{name}: prefix of {len} bytes (header and data complete) failed: {r:?}"
                );
            }
        }
    }
}

/// xorshift64: a fixed, dependency-free stream of test bytes.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Flipping any byte of the header, to several values, never panics; and random multi-byte
/// corruption anywhere never panics. (Many flips still give a valid file: a changed letter in
/// a string, a changed float.)
#[test]
fn byte_flips_never_panic() {
    let bytes = fixture_bytes("all_types.gguf");
    let h = parse_header(&bytes).expect("fixture parses");
    let mut errors = 0;
    for pos in 0..h.header_len as usize {
        for x in [0x01, 0x80, 0xff, 0x7f, 0x10] {
            let mut b = bytes.clone();
            b[pos] ^= x;
            errors += usize::from(parse_header(&b).is_err());
        }
    }
    assert!(errors > 1000, "only {errors} header flips were rejected");
    let mut state = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next(&mut state) % 8 {
            let pos = (next(&mut state) % b.len() as u64) as usize;
            b[pos] = next(&mut state) as u8;
        }
        let _ = parse_header(&b);
    }
}

#[test]
fn bad_magic() {
    let mut bytes = fixture_bytes("all_types.gguf");
    bytes[0] = b'X';
    assert!(matches!(err(&bytes), GgufError::BadMagic { ref found } if found == b"XGUF"));
    assert!(matches!(err(b"GG"), GgufError::BadMagic { .. }));
    let msg = err(b"PK\x03\x04rest").to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");
}

#[test]
fn version_1_and_unknown_versions() {
    let mut bytes = fixture_bytes("all_types.gguf");
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = err(&bytes);
    assert!(matches!(e, GgufError::UnsupportedVersion { version: 1 }));
    assert!(e.to_string().contains("v1"), "{e}");
    bytes[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(
        err(&bytes),
        GgufError::UnsupportedVersion { version: 4 }
    ));
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = err(&bytes);
    assert!(matches!(e, GgufError::BigEndian { .. }));
    assert!(e.to_string().contains("big-endian"), "{e}");
}

#[test]
fn unknown_value_type_names_the_key() {
    let e = err(&Builder::new().kv("my.key", 13, &[0; 8]).build());
    assert!(
        matches!(e, GgufError::UnknownValueType { ref key, type_id: 13 } if key == "my.key"),
        "{e}"
    );
    // An unknown element type inside an array.
    let mut arr = 99u32.to_le_bytes().to_vec();
    arr.extend(1u64.to_le_bytes());
    let e = err(&Builder::new().kv("my.arr", 9, &arr).build());
    assert!(
        matches!(e, GgufError::UnknownValueType { ref key, type_id: 99 } if key == "my.arr"),
        "{e}"
    );
}

#[test]
fn unknown_ggml_type_names_the_tensor() {
    let bytes = Builder::new()
        .tensor("blk.0.ffn_up.weight", &[32, 2], 36, &[0; 64])
        .build();
    let e = err(&bytes);
    assert!(
        matches!(e, GgufError::UnknownGgmlType { ref tensor, type_id: 36 } if tensor == "blk.0.ffn_up.weight")
    );
    let msg = e.to_string();
    assert!(
        msg.contains("blk.0.ffn_up.weight") && msg.contains("36"),
        "{msg}"
    );
}

#[test]
fn tensor_data_past_eof() {
    let bytes = Builder::new().tensor("w", &[4, 4], 0, &[0; 64]).build();
    parse_header(&bytes).expect("complete file parses");
    let e = err(&bytes[..bytes.len() - 1]);
    assert!(
        matches!(e, GgufError::DataOutOfBounds { ref tensor, .. } if tensor == "w"),
        "{e}"
    );
    // An offset so large that data_offset + offset overflows u64.
    let e = err(&Builder::new()
        .tensor_at("w", &[4], 0, u64::MAX - 31)
        .build());
    assert!(matches!(e, GgufError::DataOutOfBounds { .. }), "{e}");
}

#[test]
fn misaligned_offset() {
    let e = err(&Builder::new().tensor_at("w", &[1], 0, 4).build());
    assert!(
        matches!(e, GgufError::MisalignedOffset { ref tensor, offset: 4, alignment: 32 } if tensor == "w")
    );
}

#[test]
fn huge_counts_fail_fast() {
    // 2^60 strings: must be refused before any allocation.
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 60).to_le_bytes());
    let e = err(&Builder::new().kv("tokenizer.ggml.tokens", 9, &arr).build());
    assert!(
        matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 60),
        "{e}"
    );
    // Huge metadata and tensor counts in the header itself.
    let mut bytes = Builder::new().build();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(err(&bytes), GgufError::CountTooLarge { .. }));
    let mut bytes = Builder::new().build();
    bytes[8..16].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(err(&bytes), GgufError::CountTooLarge { .. }));
    // A string length of 2^63.
    let e = err(&Builder::new()
        .kv("k", 8, &(1u64 << 63).to_le_bytes())
        .build());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    let mut value = Vec::new();
    for _ in 0..100_000 {
        value.extend(9u32.to_le_bytes());
        value.extend(1u64.to_le_bytes());
    }
    value.extend(0u32.to_le_bytes());
    value.extend(0u64.to_le_bytes());
    let e = err(&Builder::new().kv("deep", 9, &value).build());
    assert!(
        matches!(
            e,
            GgufError::NestingTooDeep {
                limit: MAX_ARRAY_DEPTH,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_values() {
    let e = err(&Builder::new().kv("flag", 7, &[2]).build());
    assert!(matches!(e, GgufError::InvalidBool { ref key, value: 2 } if key == "flag"));
    let e = err(&Builder::new().kv("name", 8, &gguf_str(b"ab\xffcd")).build());
    assert!(
        matches!(e, GgufError::InvalidUtf8 { ref what, .. } if what.contains("'name'")),
        "{e}"
    );
    let mut bad_key = gguf_str(b"k\xc3");
    bad_key.extend(0u32.to_le_bytes());
    bad_key.push(1);
    let mut bytes = Builder::new().build();
    bytes[16..24].copy_from_slice(&1u64.to_le_bytes());
    bytes.splice(24..24, bad_key);
    assert!(matches!(err(&bytes), GgufError::InvalidUtf8 { .. }));
    let e = err(&Builder::new().kv_u32("a", 1).kv_u32("a", 2).build());
    assert!(matches!(e, GgufError::DuplicateKey { ref key } if key == "a"));
}

#[test]
fn bad_alignment() {
    for (ty, value) in [
        (4u32, 48u32.to_le_bytes().to_vec()),
        (4, vec![0; 4]),
        (10, 64u64.to_le_bytes().to_vec()),
    ] {
        let e = err(&Builder::new().kv("general.alignment", ty, &value).build());
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{e}");
    }
}

#[test]
fn bad_tensor_infos() {
    let e = err(&Builder::new().tensor("w", &[1; 5], 0, &[0; 4]).build());
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }));
    let e = err(&Builder::new().tensor("q", &[48, 2], 8, &[0; 136]).build());
    assert!(
        matches!(
            e,
            GgufError::PartialBlock {
                row_len: 48,
                block_size: 32,
                ..
            }
        ),
        "{e}"
    );
    let e = err(&Builder::new()
        .tensor_at("big", &[1 << 40, 1 << 40], 0, 0)
        .build());
    assert!(matches!(e, GgufError::SizeOverflow { .. }), "{e}");
    // Zero-sized dimensions: no elements, but the other dimensions still must not overflow.
    let e = err(&Builder::new()
        .tensor_at("z", &[0, 1 << 40, 1 << 40], 0, 0)
        .build());
    assert!(matches!(e, GgufError::SizeOverflow { .. }), "{e}");
    let h = parse_header(&Builder::new().tensor_at("z", &[0, 1 << 40], 0, 0).build())
        .expect("empty tensor");
    assert_eq!(
        (
            h.tensors[0].nbytes,
            h.tensors[0].shape().iter().product::<usize>()
        ),
        (0, 0)
    );
    let e = err(&Builder::new()
        .tensor("w", &[1], 0, &[0; 4])
        .tensor("w", &[1], 0, &[0; 4])
        .build());
    assert!(matches!(e, GgufError::DuplicateTensor { ref name } if name == "w"));
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, b"GGUF\x01\x00\x00\x00").expect("write");
    let e = GgufFile::open(&path).expect_err("v1");
    assert!(
        matches!(e.innermost(), GgufError::UnsupportedVersion { version: 1 }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("broken.gguf") && msg.contains("version 1"),
        "{msg}"
    );
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").expect("write");
    assert!(GgufFile::open(&empty)
        .expect_err("empty")
        .to_string()
        .contains("not a GGUF file"));
    let missing = dir.path().join("missing.gguf");
    assert!(matches!(
        GgufFile::open(&missing),
        Err(GgufError::Io { .. })
    ));
}
