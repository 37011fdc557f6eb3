//! The GGUF reader on files written by llama.cpp's own converter and quantizer
//! (`fixtures/gguf/`, made by `fixtures/gguf/make_gguf.py`): every tensor's type and shape must be
//! what gguf-py recorded for the same file (`NAME-TYPE.json`, `tensor_types`, shapes in GGUF's
//! innermost-first order), and the byte sizes must add up to the file.

use std::path::PathBuf;

use frugal_formats::gguf::GgufModel;
use frugal_formats::TensorSource;

fn gguf_fixtures() -> Vec<PathBuf> {
    let root = frugal_testdata::fixtures_dir().join("gguf");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).expect("fixtures/gguf is committed") {
        let dir = dir.expect("readable").path();
        if !dir.is_dir() || dir.ends_with("split") {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("readable") {
            let p = f.expect("readable").path();
            if p.extension().is_some_and(|e| e == "gguf") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn llama_cpp_files_read_as_gguf_py_reads_them() {
    let files = gguf_fixtures();
    assert!(
        files.len() >= 20,
        "expected the llama.cpp GGUF fixtures, found {}",
        files.len()
    );
    let mut seen_types = std::collections::BTreeSet::new();
    for path in files {
        let json_path = path.with_extension("json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json beside gguf"))
                .expect("valid JSON");
        let want = json["tensor_types"].as_object().expect("tensor_types");
        let model = GgufModel::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let infos = model.tensor_infos();
        assert_eq!(infos.len(), want.len(), "{}: tensor count", path.display());
        let file_len = std::fs::metadata(&path).expect("stat").len() as usize;
        let mut data_bytes = 0;
        for info in &infos {
            let w = &want[&info.name];
            assert_eq!(
                info.dtype.name(),
                w["type"].as_str().expect("type"),
                "{}",
                info.name
            );
            let mut shape: Vec<usize> = w["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            shape.reverse();
            assert_eq!(info.shape, shape, "{}: {}", path.display(), info.name);
            let view = model.tensor(&info.name).expect("view");
            assert_eq!(view.data.len(), info.nbytes, "{}", info.name);
            data_bytes += info.nbytes;
            seen_types.insert(info.dtype.name());
        }
        assert!(
            data_bytes <= file_len,
            "{}: tensor data exceeds the file",
            path.display()
        );
    }
    for t in ["F32", "F16", "BF16", "Q8_0", "Q4_K", "Q6_K", "Q5_0"] {
        assert!(
            seen_types.contains(t),
            "no {t} tensor among the fixtures: {seen_types:?}"
        );
    }
}
