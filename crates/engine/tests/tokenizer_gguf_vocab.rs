//! GGUF tokenizers against llama.cpp's tokenizer test set: every `.inp`/`.out` pair in
//! `<reference>/vocab/`. The expected ids were produced by the models' Hugging Face tokenizers
//! (llama.cpp's `convert_hf_to_gguf_update.py`); llama.cpp's `test-tokenizer-0` compares them
//! with `tokenize(text, add_special = false, parse_special = false)`, splitting the `.inp` file
//! on `"\n__ggml_vocab_test__\n"` without any further stripping. We do the same (no BOS).

use std::path::PathBuf;

use frugal_engine::tokenizer::Tokenizer;

/// `<workspace>/../shared/reference`, or `$FRUGAL_REFERENCE_DIR`.
fn reference_dir() -> PathBuf {
    let dir = match std::env::var_os("FRUGAL_REFERENCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference"),
    };
    assert!(
        dir.join("vocab").is_dir(),
        "reference data not found at {} (set FRUGAL_REFERENCE_DIR to the shared/reference folder)",
        dir.display()
    );
    dir
}

fn load(name: &str) -> Tokenizer {
    let path = reference_dir().join("vocab").join(format!("ggml-vocab-{name}.gguf"));
    Tokenizer::from_gguf_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The test strings of `<name>.inp` paired with the ids of `<name>.out`.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = reference_dir().join("vocab");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).expect("reading .inp");
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).expect("reading .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                texts.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().expect("id in .out")).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree on the number of tests");
    texts.into_iter().zip(ids).collect()
}

fn check(name: &str) {
    let tok = load(name);
    let mut failures = Vec::new();
    let cases = cases(name);
    assert!(!cases.is_empty());
    for (text, want) in &cases {
        let got = tok.encode(text, false).expect("encode");
        if &got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
        // Decoding the reference ids gives the text back (these vocabularies are lossless on
        // these strings, up to SentencePiece's dropped leading space).
        let back = tok.decode(want, false).expect("decode");
        if &back != text && !(name == "llama-spm" && text.starts_with(' ') && back == text[1..]) {
            failures.push(format!("decode {text:?} gave {back:?}"));
        }
    }
    assert!(failures.is_empty(), "{name}: {} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn deepseek_llm() {
    check("deepseek-llm");
}
#[test]
fn deepseek_coder() {
    check("deepseek-coder");
}
#[test]
fn qwen2() {
    check("qwen2");
}
#[test]
fn llama_bpe() {
    check("llama-bpe");
}
#[test]
fn llama_spm() {
    check("llama-spm");
}
#[test]
fn gpt2() {
    check("gpt-2");
}
