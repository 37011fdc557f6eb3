//! The GGUF reader against gguf-py: fixtures written by gguf-py's `GGUFWriter` and what its
//! `GGUFReader` reads back (`fixtures/formats/make_gguf_fixtures.py` writes both), the real
//! vocab files of the reference directory, gguf-py's type table, and malformed input.

// Submodules live in tests/gguf/ so that cargo does not build them as test crates of their own.
#[path = "gguf/fuzz_regressions.rs"]
mod fuzz_regressions;
#[path = "gguf/malformed.rs"]
mod malformed;
#[path = "gguf/split.rs"]
mod split;
#[path = "gguf/support.rs"]
mod support;

use frugal_formats::gguf::{parse_header, GgufFile, GgufModel, MetaValue, Metadata};
use frugal_formats::{DType, TensorSource};
use serde_json::Value;
use support::{fixture, read_json, reference_dir, repo_root};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The GGUF value type name gguf-py uses for a value.
fn vt_name(v: &MetaValue) -> &'static str {
    match v {
        MetaValue::U8(_) => "UINT8",
        MetaValue::I8(_) => "INT8",
        MetaValue::U16(_) => "UINT16",
        MetaValue::I16(_) => "INT16",
        MetaValue::U32(_) => "UINT32",
        MetaValue::I32(_) => "INT32",
        MetaValue::F32(_) => "FLOAT32",
        MetaValue::Bool(_) => "BOOL",
        MetaValue::String(_) => "STRING",
        MetaValue::Array(_) => "ARRAY",
        MetaValue::U64(_) => "UINT64",
        MetaValue::I64(_) => "INT64",
        MetaValue::F64(_) => "FLOAT64",
    }
}

/// gguf-py's `types` list: the value's type, then (for arrays) the element types down to a scalar.
fn type_chain(v: &MetaValue) -> Vec<&'static str> {
    let mut chain = vec![vt_name(v)];
    let mut cur = v;
    while let MetaValue::Array(a) = cur {
        match a.first() {
            Some(first) => {
                chain.push(vt_name(first));
                cur = first;
            }
            None => break,
        }
    }
    chain
}

/// Flattens nested arrays, as gguf-py's `ReaderField.contents()` does.
fn flatten(v: &MetaValue) -> Vec<&MetaValue> {
    match v {
        MetaValue::Array(a) => a.iter().flat_map(flatten).collect(),
        other => vec![other],
    }
}

/// Whether a scalar equals a JSON value exactly (an f32 is widened to f64 exactly).
fn scalar_eq(v: &MetaValue, j: &Value) -> bool {
    match v {
        MetaValue::String(s) => j.as_str() == Some(s),
        MetaValue::Bool(b) => j.as_bool() == Some(*b),
        MetaValue::F32(x) => j.as_f64().map(f64::to_bits) == Some(f64::from(*x).to_bits()),
        MetaValue::F64(x) => j.as_f64().map(f64::to_bits) == Some(x.to_bits()),
        MetaValue::U64(x) => j.as_u64() == Some(*x),
        other => other.as_i64().is_some() && j.as_i64() == other.as_i64(),
    }
}

fn value_eq_nested(v: &MetaValue, j: &Value) -> bool {
    match (v, j) {
        (MetaValue::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| value_eq_nested(x, y))
        }
        (MetaValue::Array(_), _) | (_, Value::Array(_)) => false,
        (x, y) => scalar_eq(x, y),
    }
}

fn str_list(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|t| t.as_str().expect("a JSON string"))
        .collect()
}

fn check_metadata_against(md: &Metadata, keys: &[Value], file: &str) {
    let ours: Vec<&str> = md.iter().map(|(k, _)| k).collect();
    let theirs: Vec<&str> = keys
        .iter()
        .map(|k| k["key"].as_str().expect("key"))
        .collect();
    assert_eq!(ours, theirs, "{file}: keys in file order");
    for k in keys {
        let key = k["key"].as_str().expect("key");
        let v = md.get(key).expect("present");
        assert_eq!(
            type_chain(v),
            str_list(&k["types"]),
            "{file}: types of {key}"
        );
        match v {
            MetaValue::Array(_) => {
                let flat = flatten(v);
                let expected = k["value"].as_array().expect("array value");
                assert_eq!(flat.len(), expected.len(), "{file}: {key} length");
                for (i, (x, y)) in flat.iter().zip(expected).enumerate() {
                    assert!(
                        scalar_eq(x, y),
                        "{file}: {key}[{i}]: ours {x:?}, gguf-py {y}"
                    );
                }
                if let Some(nested) = k.get("nested_as_written") {
                    assert!(
                        value_eq_nested(v, nested),
                        "{file}: {key}: ours {v}, written {nested}"
                    );
                }
            }
            _ => assert!(
                scalar_eq(v, &k["value"]),
                "{file}: {key}: ours {v:?}, gguf-py {}",
                k["value"]
            ),
        }
    }
}

#[test]
fn fixtures_match_gguf_py_reader() {
    let expected = read_json(&fixture("expected.json"));
    let files = expected["files"].as_array().expect("files");
    assert_eq!(files.len(), 6);
    for f in files {
        let name = f["file"].as_str().expect("file");
        let g = GgufFile::open(fixture(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            u64::from(g.version()),
            f["version"].as_u64().expect("version"),
            "{name}"
        );
        assert_eq!(
            g.alignment(),
            f["alignment"].as_u64().expect("alignment"),
            "{name}"
        );
        assert_eq!(
            g.data_offset(),
            f["data_offset"].as_u64().expect("data_offset"),
            "{name}"
        );
        check_metadata_against(g.metadata(), f["keys"].as_array().expect("keys"), name);

        let tensors = f["tensors"].as_array().expect("tensors");
        let infos = g.tensor_infos();
        assert_eq!(infos.len(), tensors.len(), "{name}");
        for (info, t) in infos.iter().zip(tensors) {
            let tname = t["name"].as_str().expect("name");
            assert_eq!(info.name, tname);
            assert_eq!(
                info.dtype.name(),
                t["type"].as_str().expect("type"),
                "{tname}"
            );
            assert_eq!(
                info.dtype.ggml_id().map(u64::from),
                t["type_id"].as_u64(),
                "{tname}"
            );
            let mut shape: Vec<usize> = t["ne"]
                .as_array()
                .expect("ne")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            shape.reverse();
            assert_eq!(info.shape, shape, "{tname}: shape is ne reversed");
            assert_eq!(
                info.numel() as u64,
                t["n_elements"].as_u64().expect("n_elements"),
                "{tname}"
            );
            assert_eq!(
                info.nbytes as u64,
                t["n_bytes"].as_u64().expect("n_bytes"),
                "{tname}"
            );
            let raw = g
                .gguf_tensors()
                .iter()
                .find(|r| r.name == tname)
                .expect("entry");
            assert_eq!(
                g.data_offset() + raw.offset,
                t["data_offset"].as_u64().expect("offset"),
                "{tname}"
            );
            let view = g.tensor(tname).expect("tensor by name");
            assert_eq!(
                (view.name, view.dtype, &view.shape),
                (tname, info.dtype, &info.shape)
            );
            assert_eq!(
                hex(view.data),
                t["data_hex"].as_str().expect("data_hex"),
                "{tname}: data"
            );
        }
        assert!(g.tensor("no.such.tensor").is_none());
    }
}

#[test]
fn shapes_follow_row_major_order() {
    let g = GgufFile::open(fixture("all_types.gguf")).expect("fixture opens");
    assert_eq!(g.architecture(), Some("testarch"));
    let t = g.tensor("t.experts_3d").expect("3-D tensor");
    assert_eq!(t.shape, [2, 3, 4]);
    assert_eq!(t.data.len(), 2 * 3 * 4 * 4);
    let t = g.tensor("t.q4_k").expect("Q4_K tensor");
    assert_eq!(
        (t.dtype, t.shape.as_slice(), t.data.len()),
        (DType::Q4K, &[2, 256][..], 2 * 144)
    );
    let t = g.tensor("t.f32").expect("F32 tensor");
    let first: Vec<f32> = t
        .data
        .chunks(4)
        .take(6)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    assert_eq!(first, [-1.75, -1.5, -1.25, -1.0, -0.75, -0.5]);
}

#[test]
fn metadata_getters_on_fixture() {
    let g = GgufFile::open(fixture("all_types.gguf")).expect("fixture opens");
    let md = g.metadata();
    assert_eq!(md.get_u64("test.u32"), Some(4_000_000_000));
    assert_eq!(md.get_i64("test.i8"), Some(-100));
    assert_eq!(md.get_u64("test.i8"), None);
    assert_eq!(md.get_f64("test.f64"), Some(std::f64::consts::E));
    assert_eq!(md.get_bool("test.bool_true"), Some(true));
    assert_eq!(md.get_str("test.string"), Some("héllo wörld ✓ 𝄞"));
    assert_eq!(
        md.get_str_array("test.arr_str"),
        Some(vec!["a", "", "ünï", "<|im_end|>"])
    );
    assert_eq!(
        md.get_f32_array("test.arr_f32"),
        Some(vec![0.5, -1.25, 3.0e-8])
    );
    assert_eq!(md.get_i64_array("test.arr_i32"), Some(vec![1, -2, 3, -4]));
    assert_eq!(
        md.get_i64_array("test.arr_u64"),
        None,
        "2^63 + 5 does not fit an i64"
    );
    assert_eq!(md.get_str_array("test.arr_nested_str"), None);
    assert!(md.len() > 20);
}

#[test]
fn non_default_alignment() {
    let g = GgufFile::open(fixture("align64.gguf")).expect("fixture opens");
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    for t in g.gguf_tensors() {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
    }
}

#[test]
fn version_2_reads_like_version_3() {
    let mut bytes = std::fs::read(fixture("all_types.gguf")).expect("fixture");
    let v3 = parse_header(&bytes).expect("v3 parses");
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = parse_header(&bytes).expect("v2 parses");
    assert_eq!(v2.version, 2);
    assert_eq!(
        (v2.metadata, v2.tensors, v2.data_offset),
        (v3.metadata, v3.tensors, v3.data_offset)
    );
}

/// Puts `DType`'s table against gguf-py's `GGMLQuantizationType` and `GGML_QUANT_SIZES`.
#[test]
fn dtype_table_matches_gguf_py() {
    let table = read_json(&repo_root().join("fixtures/formats/ggml_types.json"));
    let types = table["types"].as_array().expect("types");
    for t in types {
        let (name, id) = (
            t["name"].as_str().expect("name"),
            t["id"].as_u64().expect("id") as u32,
        );
        let d = DType::from_ggml_id(id)
            .unwrap_or_else(|| panic!("DType lacks ggml type {name} ({id})"));
        assert_eq!(d.name(), name, "id {id}");
        assert_eq!(
            d.block_size() as u64,
            t["block_size"].as_u64().expect("block_size"),
            "{name}"
        );
        let type_size = t["type_size"].as_u64().expect("type_size");
        if d == DType::Q8_1 {
            // gguf-py still sizes block_q8_1 with f32 d and s (40); ggml's struct has f16 d and s
            // and static_asserts 36 bytes. Files never store Q8_1 (it is an activation format).
            assert_eq!((d.type_size(), type_size), (36, 40));
        } else {
            assert_eq!(d.type_size() as u64, type_size, "{name}");
        }
    }
    for d in DType::all() {
        if let Some(id) = d.ggml_id() {
            assert!(
                types
                    .iter()
                    .any(|t| t["id"].as_u64() == Some(u64::from(id))),
                "{d} ({id}) unknown to gguf-py"
            );
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h = (*h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
}

/// The element encoding the fixture script hashes: UTF-8 + NUL for strings, LE bytes otherwise.
fn hash_elements(a: &[MetaValue]) -> u64 {
    let mut h = FNV_OFFSET;
    for v in a {
        match v {
            MetaValue::String(s) => {
                fnv1a64(&mut h, s.as_bytes());
                fnv1a64(&mut h, &[0]);
            }
            MetaValue::U8(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::I8(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::U16(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::I16(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::U32(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::I32(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::F32(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::U64(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::I64(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::F64(x) => fnv1a64(&mut h, &x.to_le_bytes()),
            MetaValue::Bool(x) => fnv1a64(&mut h, &[u8::from(*x)]),
            MetaValue::Array(_) => panic!("nested array in a vocab file"),
        }
    }
    h
}

/// The real vocab files of the reference directory, against gguf-py's reading of them.
#[test]
fn reference_vocab_files_match_gguf_py() {
    let expected = read_json(&fixture("reference_vocab.json"));
    let files = expected["files"].as_array().expect("files");
    let dir = reference_dir().join("vocab");
    let on_disk = std::fs::read_dir(&dir)
        .expect("vocab dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.path().extension().is_some_and(|x| x == "gguf"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(
        on_disk,
        files.len(),
        "vocab files in {} vs reference_vocab.json",
        dir.display()
    );
    for f in files {
        let name = f["file"].as_str().expect("file");
        let model = GgufModel::open(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        let g = &model.files()[0];
        assert_eq!(
            u64::from(g.version()),
            f["version"].as_u64().expect("version")
        );
        assert_eq!(
            g.gguf_tensors().len() as u64,
            f["tensor_count"].as_u64().expect("tensor_count")
        );
        let md = model.metadata();
        let keys = f["keys"].as_array().expect("keys");
        assert_eq!(md.len(), keys.len(), "{name}");
        for (k, (key, v)) in keys.iter().zip(md.iter()) {
            assert_eq!(key, k["key"].as_str().expect("key"), "{name}");
            assert_eq!(type_chain(v), str_list(&k["types"]), "{name}: {key}");
            match v {
                MetaValue::Array(a) => {
                    assert_eq!(
                        a.len() as u64,
                        k["len"].as_u64().expect("len"),
                        "{name}: {key}"
                    );
                    let first = k["first"].as_array().expect("first");
                    let last = k["last"].as_array().expect("last");
                    assert!(
                        a.iter().zip(first).all(|(x, y)| scalar_eq(x, y)),
                        "{name}: {key} head"
                    );
                    let tail = &a[a.len() - last.len()..];
                    assert!(
                        tail.iter().zip(last).all(|(x, y)| scalar_eq(x, y)),
                        "{name}: {key} tail"
                    );
                    let hash = format!("{:016x}", hash_elements(a));
                    assert_eq!(hash, k["fnv1a64"].as_str().expect("hash"), "{name}: {key}");
                }
                _ => assert!(
                    scalar_eq(v, &k["value"]),
                    "{name}: {key}: ours {v:?}, gguf-py {}",
                    k["value"]
                ),
            }
        }
        // What a tokenizer needs, through the typed getters.
        assert!(model.architecture().is_some(), "{name}");
        assert!(md.get_str("tokenizer.ggml.model").is_some(), "{name}");
        let tokens = md.get_str_array("tokenizer.ggml.tokens").expect("tokens");
        if let Some(scores) = md.get_f32_array("tokenizer.ggml.scores") {
            assert_eq!(scores.len(), tokens.len(), "{name}");
        }
        if let Some(types) = md.get_i64_array("tokenizer.ggml.token_type") {
            assert_eq!(types.len(), tokens.len(), "{name}");
        }
    }
}
