//! `frugal logits` against transformers' reference logits (`fixtures/models/{deepseek-v3,qwen2,
//! mixtral}`), fed one token at a time through the cache; on GGUF files against llama.cpp's
//! logits (`fixtures/gguf/`); and its one-line errors.

use std::path::PathBuf;
use std::process::{Command, Output};

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::TensorSource;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    frugal_testdata::fixtures_dir().join("models").join(name)
}

fn frugal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .expect("running frugal")
}

fn prompt(dir: &std::path::Path) -> Vec<u64> {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    json["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn logits_chunk_1_match_transformers() {
    for name in ["deepseek-v3", "qwen2", "mixtral"] {
        logits_chunk_1_match(name);
    }
}

/// `frugal logits --chunk 1 --threads 2` on `model` for `ids`: `[ids.len(), vocab]` rows.
/// `frugal logits` one token at a time; `exact`: with `FRUGAL_EXACT_ACTIVATIONS=1` (f32
/// activations into quantized weights).
fn cli_logits(model: &std::path::Path, ids: &[u64], exact: bool) -> Vec<Vec<f32>> {
    let tokens: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args([
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--tokens",
            &tokens.join(","),
            "--chunk",
            "1",
            "--threads",
            "2",
        ])
        .env("FRUGAL_EXACT_ACTIVATIONS", if exact { "1" } else { "0" })
        .output()
        .expect("running frugal");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = got["logits"].as_array().unwrap();
    assert_eq!(rows.len(), ids.len());
    rows.iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Largest |a - b| between CLI rows and a row-major `[rows, vocab]` f32 tensor of `st`.
fn max_diff_vs(rows: &[Vec<f32>], st: &SafetensorsFile, name: &str) -> f32 {
    let t = st.tensor(name).unwrap();
    let want: Vec<f32> = t
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let vocab = t.shape[1];
    assert_eq!(rows.len(), t.shape[0]);
    let mut max = 0.0f32;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), vocab);
        for (j, v) in row.iter().enumerate() {
            max = max.max((v - want[i * vocab + j]).abs());
        }
    }
    max
}

fn logits_chunk_1_match(name: &str) {
    let dir = fixture(name);
    let ids = prompt(&dir);
    let rows = cli_logits(&dir, &ids, false);

    let st = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
    let max = max_diff_vs(&rows, &st, "logits_stepwise");
    assert!(max <= 1e-4, "{name}: max |Δlogits| {max}");
}

fn fails_with(args: &[&str], needle: &str) {
    let out = frugal(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn bad_input_one_line_errors() {
    let dir = fixture("deepseek-v3");
    let d = dir.to_str().unwrap();
    fails_with(
        &["logits", "--model", d, "--tokens", "1,512,2"],
        "token id 512",
    );
    fails_with(
        &["logits", "--model", d, "--tokens", "1,x"],
        "\"x\" is not a token id",
    );
    fails_with(
        &["logits", "--model", d, "--tokens", "1", "--chunk", "0"],
        "--chunk",
    );
    let long = vec!["1"; 40961].join(",");
    fails_with(
        &["logits", "--model", d, "--tokens", &long],
        "max_position_embeddings",
    );
}

/// GGUF files against llama.cpp: F32 vs its `logits`; Q4_K_M (activations quantized as
/// llama.cpp does, the default) vs its `logits`; Q8_0 with `FRUGAL_EXACT_ACTIVATIONS=1` vs its
/// logits on the same weights dequantized (`logits_dequantized_weights`, f32 activations).
#[test]
fn gguf_logits_match_llama_cpp() {
    for (name, ty, key, exact) in [
        ("llama", "F32", "logits", false),
        ("qwen3-moe", "Q4_K_M", "logits", false),
        ("deepseek-v3", "Q8_0", "logits_dequantized_weights", true),
    ] {
        let dir = frugal_testdata::fixtures_dir().join("gguf").join(name);
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}-{ty}.json"))).unwrap(),
        )
        .unwrap();
        let ids: Vec<u64> = json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let rows = cli_logits(&dir.join(format!("{name}-{ty}.gguf")), &ids, exact);
        let st =
            SafetensorsFile::open(dir.join(format!("{name}-{ty}.logits.safetensors"))).unwrap();
        let max = max_diff_vs(&rows, &st, key);
        assert!(max <= 1e-4, "{name}-{ty} vs llama.cpp {key}: {max}");
    }
}

/// A GGUF whose `blk.0.attn_q.weight` claims Q8_1 (a type with no kernel) is refused, naming
/// the tensor and the type.
#[test]
fn gguf_unsupported_type_is_refused() {
    let src = frugal_testdata::fixtures_dir().join("gguf/qwen2/qwen2-F32.gguf");
    let mut bytes = std::fs::read(src).unwrap();
    // Tensor info: name (u64 length + bytes), n_dims u32, 2 × u64 dims, type u32, offset u64.
    let name = b"blk.0.attn_q.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("tensor info of blk.0.attn_q.weight");
    let ty = at + name.len() + 4 + 16;
    assert_eq!(bytes[ty..ty + 4], 0u32.to_le_bytes(), "it was F32");
    // Q8_1 (ggml id 9): 36 bytes per 32 weights, fewer bytes than F32, so still in the file.
    bytes[ty..ty + 4].copy_from_slice(&9u32.to_le_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("q8_1.gguf");
    std::fs::write(&path, bytes).unwrap();
    fails_with(
        &["logits", "--model", path.to_str().unwrap(), "--tokens", "1"],
        "blk.0.attn_q.weight has unsupported dtype Q8_1",
    );
}
