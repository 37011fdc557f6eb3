//! safetensors reading, checked against what Python's `safetensors` library wrote and read back.
//!
//! Fixtures: `fixtures/formats/make_safetensors_fixtures.py` (see its header for how to run it)
//! writes the files and `expected.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use frugal_formats::safetensors::{SafetensorsError, SafetensorsFile, SafetensorsModel};
use frugal_formats::{DType, TensorSource};
use serde_json::Value;

fn fixtures() -> PathBuf {
    frugal_testdata::fixtures_dir().join("formats/safetensors")
}

fn expected() -> Value {
    let path = fixtures().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected.json is JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// FP8 E4M3 ("fn": no infinities, S.1111.111 is NaN), decoded from the definition in
/// arXiv:2209.05433 rather than by any library.
fn f8_e4m3(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((b >> 3) & 0xf);
    let m = f64::from(b & 7);
    if e == 15 && m == 7.0 {
        return f64::NAN;
    }
    if e == 0 {
        sign * m / 8.0 * 2f64.powi(-6)
    } else {
        sign * (1.0 + m / 8.0) * 2f64.powi(e - 7)
    }
}

/// Element values decoded from raw bytes, as f64 (floats) or i128 (integers).
enum Decoded {
    Float(Vec<f64>),
    Int(Vec<i128>),
}

fn decode(dtype: DType, data: &[u8]) -> Decoded {
    let chunks = |n: usize| data.chunks_exact(n).map(|c| c.to_vec()).collect::<Vec<_>>();
    match dtype {
        DType::F32 => Decoded::Float(
            chunks(4)
                .iter()
                .map(|c| f64::from(f32::from_le_bytes(c[..].try_into().unwrap())))
                .collect(),
        ),
        DType::F64 => Decoded::Float(
            chunks(8)
                .iter()
                .map(|c| f64::from_le_bytes(c[..].try_into().unwrap()))
                .collect(),
        ),
        DType::F16 => Decoded::Float(
            chunks(2)
                .iter()
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
        ),
        DType::BF16 => Decoded::Float(
            chunks(2)
                .iter()
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
        ),
        DType::F8E4M3 => Decoded::Float(data.iter().map(|&b| f8_e4m3(b)).collect()),
        DType::I64 => Decoded::Int(
            chunks(8)
                .iter()
                .map(|c| i128::from(i64::from_le_bytes(c[..].try_into().unwrap())))
                .collect(),
        ),
        DType::U8 | DType::Bool => Decoded::Int(data.iter().map(|&b| i128::from(b)).collect()),
        other => panic!("no decoder for {other}"),
    }
}

fn check_file(rel: &str, want: &Value) {
    let file = SafetensorsFile::open(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let meta: BTreeMap<String, String> = serde_json::from_value(want["metadata"].clone()).unwrap();
    assert_eq!(file.metadata(), &meta, "{rel}: __metadata__");
    let order: Vec<&str> = want["offset_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(file.names().collect::<Vec<_>>(), order, "{rel}: file order");
    let infos = file.tensor_infos();
    assert_eq!(infos.len(), order.len());
    for info in infos {
        let w = &want["tensors"][&info.name];
        let t = file.tensor(&info.name).expect("listed tensor has a view");
        let ctx = format!("{rel}: {}", info.name);
        assert_eq!(t.dtype.name(), w["dtype"].as_str().unwrap(), "{ctx}: dtype");
        assert_eq!(info.dtype, t.dtype);
        let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{ctx}: shape");
        assert_eq!(info.shape, shape);
        assert_eq!(
            t.data,
            &unhex(w["hex"].as_str().unwrap())[..],
            "{ctx}: bytes"
        );
        assert_eq!(info.nbytes, t.data.len());
        assert_eq!(t.numel() * t.dtype.type_size(), t.data.len(), "{ctx}: size");
        let values = w["values"].as_array().unwrap();
        match decode(t.dtype, t.data) {
            Decoded::Float(got) => {
                let want: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(got.len(), want.len(), "{ctx}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        g == w && g.is_sign_negative() == w.is_sign_negative(),
                        "{ctx}: {g} != {w}"
                    );
                }
            }
            Decoded::Int(got) => {
                let want: Vec<i128> = values
                    .iter()
                    .map(|v| v.as_i64().map(i128::from).unwrap())
                    .collect();
                assert_eq!(got, want, "{ctx}");
            }
        }
    }
    assert!(file.tensor("no.such.tensor").is_none());
}

#[test]
fn files_match_python_reader() {
    let exp = expected();
    let files = exp["files"].as_object().unwrap();
    assert!(files.len() >= 8, "fixture lists {} files", files.len());
    for (rel, want) in files {
        check_file(rel, want);
    }
    // The dtype sampler really has every type the task cares about.
    let dtypes = SafetensorsFile::open(fixtures().join("dtypes.safetensors")).unwrap();
    let have: Vec<DType> = dtypes.tensor_infos().iter().map(|i| i.dtype).collect();
    for d in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::I64,
    ] {
        assert!(have.contains(&d), "{d} missing from dtypes.safetensors");
    }
}

#[test]
fn fp8_bytes_survive() {
    let file = SafetensorsFile::open(fixtures().join("dtypes.safetensors")).unwrap();
    let t = file.tensor("f8.weight").unwrap();
    assert_eq!(t.dtype, DType::F8E4M3);
    assert_eq!(t.shape, [3, 4]);
    // 448 is E4M3's largest finite value: 0.1111.110.
    assert_eq!(t.data[4], 0x7e);
    assert_eq!(t.data[5], 0xfe);
}

#[test]
fn models_match_python() {
    let exp = expected();
    for (name, want) in exp["models"].as_object().unwrap() {
        let dir = fixtures().join(name);
        let calls = std::cell::RefCell::new(Vec::new());
        let model = SafetensorsModel::open_dir_with_progress(&dir, &|done, total| {
            calls.borrow_mut().push((done, total))
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let n = model.files().len();
        assert_eq!(
            *calls.borrow(),
            (1..=n).map(|i| (i, n)).collect::<Vec<_>>(),
            "{name}: progress"
        );
        assert_eq!(
            model.index_path().is_some(),
            want["index"].as_bool().unwrap(),
            "{name}: index"
        );
        let mut names: Vec<String> = model.tensor_infos().into_iter().map(|i| i.name).collect();
        names.sort();
        let want_names: Vec<String> = serde_json::from_value(want["tensors"].clone()).unwrap();
        assert_eq!(names, want_names, "{name}: tensors");
        for tensor in &names {
            let file = model.file_of(tensor).unwrap();
            let rel = file
                .path()
                .strip_prefix(fixtures())
                .unwrap()
                .to_str()
                .unwrap()
                .replace('\\', "/");
            if let Some(shard) = want["weight_map"][tensor].as_str() {
                assert_eq!(
                    file.path().file_name().unwrap(),
                    shard,
                    "{name}: {tensor} shard"
                );
            }
            let hex = exp["files"][&rel]["tensors"][tensor]["hex"]
                .as_str()
                .unwrap();
            assert_eq!(
                model.tensor(tensor).unwrap().data,
                &unhex(hex)[..],
                "{name}: {tensor}"
            );
        }
    }
    let single = SafetensorsModel::open_dir(fixtures().join("single")).unwrap();
    assert_eq!(
        single.files().len(),
        1,
        "model.safetensors is preferred over other files"
    );
}

fn open_malformed(name: &str) -> SafetensorsError {
    match SafetensorsFile::open(fixtures().join("malformed").join(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "error does not name the file: {msg}");
            e
        }
    }
}

#[test]
fn malformed_files_give_precise_errors() {
    use SafetensorsError as E;
    let e = open_malformed("overlap.safetensors");
    assert!(
        matches!(&e, E::BadOffsets { tensor, begin: 4, expected_begin: 8, .. } if tensor == "b"),
        "{e}"
    );
    let e = open_malformed("gap.safetensors");
    assert!(
        matches!(&e, E::BadOffsets { tensor, begin: 8, expected_begin: 4, .. } if tensor == "b"),
        "{e}"
    );
    let e = open_malformed("unknown_dtype.safetensors");
    assert!(
        matches!(&e, E::UnknownDtype { tensor, dtype, .. } if tensor == "weird.weight" && dtype == "F12"),
        "{e}"
    );
    let e = open_malformed("f4_dtype.safetensors");
    assert!(
        matches!(&e, E::UnknownDtype { tensor, dtype, .. } if tensor == "fp4.weight" && dtype == "F4"),
        "{e}"
    );
    let e = open_malformed("size_mismatch.safetensors");
    assert!(
        matches!(&e, E::SizeMismatch { tensor, expected: 12, actual: 8, .. } if tensor == "short.weight"),
        "{e}"
    );
    let e = open_malformed("offsets_past_end.safetensors");
    assert!(
        matches!(
            &e,
            E::DataLength {
                expected: 12,
                actual: 8,
                ..
            }
        ),
        "{e}"
    );
    let e = open_malformed("trailing_bytes.safetensors");
    assert!(
        matches!(
            &e,
            E::DataLength {
                expected: 8,
                actual: 12,
                ..
            }
        ),
        "{e}"
    );
    let e = open_malformed("header_past_eof.safetensors");
    assert!(
        matches!(
            &e,
            E::HeaderPastEof {
                header_len: 4096,
                file_len: 76,
                ..
            }
        ),
        "{e}"
    );
    let e = open_malformed("header_too_large.safetensors");
    assert!(matches!(&e, E::HeaderTooLarge { .. }), "{e}");
    let e = open_malformed("not_json.safetensors");
    assert!(matches!(&e, E::InvalidHeader { .. }), "{e}");
    let e = open_malformed("not_utf8.safetensors");
    assert!(matches!(&e, E::HeaderNotUtf8 { .. }), "{e}");
    let e = open_malformed("missing_shape.safetensors");
    assert!(
        matches!(&e, E::InvalidHeader { message, .. } if message.contains("`a`") && message.contains("shape")),
        "{e}"
    );
    let e = open_malformed("negative_offset.safetensors");
    assert!(
        matches!(&e, E::InvalidHeader { message, .. } if message.contains("data_offsets")),
        "{e}"
    );
    let e = open_malformed("shape_overflow.safetensors");
    assert!(
        matches!(&e, E::ShapeOverflow { tensor, .. } if tensor == "a"),
        "{e}"
    );
    let e = open_malformed("bad_metadata.safetensors");
    assert!(
        matches!(&e, E::InvalidHeader { message, .. } if message.contains("__metadata__")),
        "{e}"
    );
    let e = open_malformed("too_short.safetensors");
    assert!(matches!(&e, E::TooShort { len: 3, .. }), "{e}");

    // Python's reader agrees on every file except F4, a dtype it knows and we do not support.
    for (name, verdict) in expected()["malformed"].as_object().unwrap() {
        let verdict = verdict.as_str().unwrap();
        assert_eq!(
            verdict.starts_with("rejected"),
            name != "f4_dtype.safetensors",
            "{name}: python {verdict}"
        );
        assert!(
            SafetensorsFile::open(fixtures().join("malformed").join(name)).is_err(),
            "{name}"
        );
    }
}

/// A file with `header` as its JSON and `data` after it.
fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn odd_headers_found_by_fuzzing() {
    // A repeated field: the crate's strict parse rejects it, the diagnosis pass (a lenient
    // JSON parse) does not see why, so the crate's own message is passed on with the path.
    let h = r#"{"a":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}"#;
    let e = SafetensorsFile::from_bytes("dup.safetensors", with_header(h, &[0; 4])).unwrap_err();
    assert!(matches!(e, SafetensorsError::Invalid { .. }), "{e}");
    assert!(
        e.to_string().contains("dup.safetensors") && e.to_string().contains("duplicate field"),
        "{e}"
    );
    // A valid file with no tensors, and one whose only tensor is empty.
    let f = SafetensorsFile::from_bytes("empty", with_header("{}", &[])).unwrap();
    assert!(f.is_empty());
    let h = r#"{"z":{"dtype":"BF16","shape":[0,7],"data_offsets":[0,0]}}"#;
    let f = SafetensorsFile::from_bytes("zero", with_header(h, &[])).unwrap();
    assert_eq!(f.tensor("z").unwrap().data.len(), 0);
    // A header that is JSON but not an object.
    let e = SafetensorsFile::from_bytes("arr", with_header("[1,2]", &[])).unwrap_err();
    assert!(matches!(e, SafetensorsError::InvalidHeader { .. }), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = std::fs::read(fixtures().join("dtypes.safetensors")).unwrap();
    assert!(SafetensorsFile::from_bytes("whole", bytes.clone()).is_ok());
    for cut in 0..bytes.len() {
        let r = SafetensorsFile::from_bytes(format!("cut-{cut}"), bytes[..cut].to_vec());
        let e = r
            .err()
            .unwrap_or_else(|| panic!("truncated at {cut} was accepted"));
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let ok = match e {
            SafetensorsError::TooShort { .. } => cut < 8,
            SafetensorsError::HeaderPastEof { .. } => (8..header_end).contains(&cut),
            SafetensorsError::DataLength { .. } => cut >= header_end,
            _ => false,
        };
        assert!(ok, "truncated at {cut}: unexpected {e}");
    }
}

#[test]
fn corrupt_header_bytes_never_panic() {
    let bytes = std::fs::read(fixtures().join("dtypes.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Every single-byte change of the length and header: Ok or Err, never a panic.
    for pos in 0..header_end {
        for v in [
            0u8, 0x01, 0x22, 0x2c, 0x30, 0x39, 0x5b, 0x5d, 0x7b, 0x7d, 0x80, 0xff,
        ] {
            let mut b = bytes.clone();
            b[pos] = v;
            if let Ok(f) = SafetensorsFile::from_bytes("corrupt", b) {
                for info in f.tensor_infos() {
                    let t = f.tensor(&info.name).unwrap();
                    assert_eq!(t.data.len(), info.nbytes);
                }
            }
        }
    }
    // Header lengths that point anywhere.
    for n in [
        0u64,
        1,
        7,
        8,
        (header_end - 9) as u64,
        (header_end - 7) as u64,
        u64::MAX,
        1 << 40,
    ] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&n.to_le_bytes());
        assert!(
            SafetensorsFile::from_bytes("len", b).is_err(),
            "header length {n}"
        );
    }
}

#[test]
fn bad_model_folders() {
    let dir = fixtures().join("bad_models");
    let e = SafetensorsModel::open_dir(dir.join("missing_shard")).unwrap_err();
    assert!(
        matches!(&e, SafetensorsError::MissingShard { shard, tensor, .. }
            if shard == "model-00002-of-00003.safetensors" && tensor == "model.layers.1.input_layernorm.weight"),
        "{e}"
    );
    assert!(
        e.to_string().contains("model-00002-of-00003.safetensors"),
        "{e}"
    );
    let e = SafetensorsModel::open_dir(dir.join("missing_tensor")).unwrap_err();
    assert!(
        matches!(&e, SafetensorsError::TensorMissingFromShard { tensor, shard, .. }
            if tensor == "model.layers.9.ghost.weight" && shard.ends_with("model-00002-of-00003.safetensors")),
        "{e}"
    );
    let e = SafetensorsModel::open_dir(dir.join("duplicate")).unwrap_err();
    assert!(
        matches!(&e, SafetensorsError::DuplicateTensor { tensor, .. } if tensor == "x"),
        "{e}"
    );
    let e = SafetensorsModel::open_dir(dir.join("escaping_shard")).unwrap_err();
    assert!(
        matches!(&e, SafetensorsError::InvalidIndex { message, .. } if message.contains("../sharded")),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let e = SafetensorsModel::open_dir(empty.path()).unwrap_err();
    assert!(matches!(e, SafetensorsError::NoWeights { .. }), "{e}");
    std::fs::write(
        empty.path().join("model.safetensors.index.json"),
        "{\"weight_map\": 3}",
    )
    .unwrap();
    let e = SafetensorsModel::open_dir(empty.path()).unwrap_err();
    assert!(matches!(e, SafetensorsError::InvalidIndex { .. }), "{e}");
    let e = SafetensorsModel::open_dir(empty.path().join("nope")).unwrap_err();
    assert!(
        matches!(
            e,
            SafetensorsError::Io { .. } | SafetensorsError::NoWeights { .. }
        ),
        "{e}"
    );
}
