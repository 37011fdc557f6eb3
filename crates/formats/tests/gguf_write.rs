//! The GGUF writer against gguf-py's `GGUFWriter` and llama.cpp's files.
//!
//! Every GGUF file in `fixtures/formats/gguf/` (written by gguf-py: every value type, nested
//! arrays, 64-byte alignment, no tensors, splits) and the llama.cpp-written GGUFs of
//! `fixtures/gguf/` are read with our reader and written back with our writer from what was
//! read (same keys in order, same tensor types, shapes and data): the bytes must be identical.
//! Bad declarations are errors naming the key or tensor.

use frugal_formats::gguf::{GgufFile, GgufWriteError, GgufWriter, MetaValue};
use frugal_formats::{DType, TensorSource};

fn rewrite(path: &std::path::Path) -> Vec<u8> {
    let f = GgufFile::open(path).expect("fixture opens");
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata().iter() {
        w.add_kv(k, v.clone()).expect("keys are unique");
    }
    for t in f.gguf_tensors() {
        w.add_tensor(&t.name, t.dtype, &t.ne).expect("valid tensor");
    }
    let mut s = w.begin(Vec::new()).expect("header");
    for t in f.gguf_tensors() {
        s.write_tensor(f.tensor(&t.name).expect("listed").data)
            .expect("data");
    }
    let (out, n) = s.finish().expect("all tensors");
    assert_eq!(n as usize, out.len());
    out
}

#[test]
fn rewriting_gguf_py_files_gives_the_same_bytes() {
    let dir = frugal_testdata::fixtures_dir().join("formats/gguf");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "gguf") {
            let orig = std::fs::read(&p).unwrap();
            assert!(rewrite(&p) == orig, "{} differs", p.display());
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} gguf-py files found");
}

#[test]
fn rewriting_llama_cpp_files_gives_the_same_bytes() {
    let dir = frugal_testdata::fixtures_dir().join("gguf");
    for name in [
        "llama/llama-Q4_K_M.gguf",
        "deepseek-v3-bf16/deepseek-v3-bf16-BF16.gguf",
    ] {
        let p = dir.join(name);
        assert!(rewrite(&p) == std::fs::read(&p).unwrap(), "{name} differs");
    }
}

#[test]
fn the_writer_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", MetaValue::String("llama".into()))
        .unwrap();
    w.add_kv(
        "a.nested",
        MetaValue::Array(vec![
            MetaValue::Array(vec![MetaValue::I8(-1)]),
            MetaValue::Array(vec![]),
        ]),
    )
    .unwrap();
    w.add_kv("general.alignment", MetaValue::U32(128)).unwrap();
    w.set_kv("general.architecture", MetaValue::String("qwen2".into()))
        .unwrap();
    w.add_tensor("x", DType::Q8_0, &[64, 3]).unwrap();
    w.add_tensor("y", DType::F32, &[5]).unwrap();
    let mut s = w.begin(std::fs::File::create(&path).unwrap()).unwrap();
    // In pieces: the padding comes once the declared size is reached.
    s.write_tensor_part(&[7u8; 34 * 2]).unwrap();
    s.write_tensor_part(&[7u8; 34 * 4]).unwrap();
    s.write_tensor(&[1u8; 20]).unwrap();
    s.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 128);
    let keys: Vec<_> = f.metadata().iter().map(|(k, _)| k.to_owned()).collect();
    assert_eq!(
        keys,
        ["a.nested", "general.alignment", "general.architecture"]
    );
    assert_eq!(f.architecture(), Some("qwen2"));
    let y = f.tensor("y").unwrap();
    assert_eq!(
        (y.shape.as_slice(), y.data),
        (&[5usize][..], &[1u8; 20][..])
    );
    assert_eq!(f.tensor("x").unwrap().shape, [3, 64]);
    assert_eq!(f.gguf_tensors()[1].offset, 256);
}

#[test]
fn bad_declarations_are_errors() {
    let mut w = GgufWriter::new();
    w.add_kv("k", MetaValue::U8(1)).unwrap();
    assert!(
        matches!(w.add_kv("k", MetaValue::U8(2)), Err(GgufWriteError::DuplicateKey(k)) if k == "k")
    );
    let e = w
        .add_kv(
            "m",
            MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I32(2)]),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key 'm': array elements of different types (u8 and i32)"
    );
    let e = w.add_tensor("q", DType::Q4K, &[100, 2]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor 'q': a row of 100 is not whole Q4_K blocks"
    );
    assert!(w.add_tensor("q", DType::F32, &[1, 1, 1, 1, 1]).is_err());
    w.add_tensor("t", DType::F32, &[4]).unwrap();
    assert!(matches!(
        w.add_tensor("t", DType::F32, &[4]),
        Err(GgufWriteError::DuplicateTensor(_))
    ));
    let mut s = w.clone().begin(Vec::new()).unwrap();
    let e = s.write_tensor(&[0u8; 15]).unwrap_err();
    assert_eq!(e.to_string(), "tensor 't': declared 16 bytes, got 15");
    s.write_tensor_part(&[0u8; 12]).unwrap();
    let e = s.write_tensor_part(&[0u8; 8]).unwrap_err();
    assert_eq!(e.to_string(), "tensor 't': declared 16 bytes, got 20");
    assert!(matches!(
        w.clone().begin(Vec::new()).unwrap().finish(),
        Err(GgufWriteError::TensorCount {
            declared: 1,
            written: 0
        })
    ));
    w.add_kv("general.alignment", MetaValue::U64(64)).unwrap();
    assert!(matches!(
        w.begin(Vec::new()),
        Err(GgufWriteError::BadAlignment(_))
    ));
}
