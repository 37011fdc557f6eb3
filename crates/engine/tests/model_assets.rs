//! End to end over the fixture models: open each one as a user would (`ModelFiles::open`), load
//! its tokenizer and chat template, and compare with what transformers produced for the same
//! model (`fixtures/models/NAME/reference.json`, written by `fixtures/models/make_models.py`):
//! - the rendered chat prompt equals `apply_chat_template(..., add_generation_prompt=True)`;
//! - its token ids equal the `tokenizers` library's;
//! - the tokenizer test strings encode to the same ids, with and without special tokens.
//!
//! The GGUF conversions (`fixtures/gguf/NAME/NAME-F32.gguf`, made by llama.cpp's converter) must
//! give the same ids from their embedded vocabulary and template, and the same typed config.

use std::path::PathBuf;

use frugal_engine::assets::{load_chat_template, load_tokenizer};
use frugal_formats::config::ModelConfig;
use frugal_formats::ModelFiles;
use serde_json::Value;

fn fixtures() -> PathBuf {
    frugal_testdata::fixtures_dir()
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("models"))
        .expect("fixtures/models is committed")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 7,
        "expected the fixture models, found {names:?}"
    );
    names
}

fn reference(name: &str) -> Value {
    let path = fixtures().join("models").join(name).join("reference.json");
    let text = std::fs::read_to_string(&path).expect("reference.json is committed");
    serde_json::from_str(&text).expect("reference.json is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Renders the reference conversation and checks text and ids against transformers.
fn check_assets(files: &ModelFiles, reference: &Value, what: &str) {
    let tokenizer = load_tokenizer(files)
        .unwrap_or_else(|e| panic!("{what}: tokenizer: {e}"))
        .unwrap_or_else(|| panic!("{what}: no tokenizer found"));
    for case in reference["tokenizer_cases"]
        .as_array()
        .expect("tokenizer_cases")
    {
        let text = case["text"].as_str().expect("text");
        let got = tokenizer.encode(text, false).expect("encode");
        assert_eq!(got, ids(&case["ids"]), "{what}: encode({text:?})");
        let got = tokenizer.encode(text, true).expect("encode");
        assert_eq!(
            got,
            ids(&case["ids_with_special"]),
            "{what}: encode({text:?}) with special tokens"
        );
    }
    let template = load_chat_template(files, Some(&tokenizer))
        .unwrap_or_else(|e| panic!("{what}: chat template: {e}"))
        .unwrap_or_else(|| panic!("{what}: no chat template found"));
    let messages = reference["messages"].as_array().expect("messages");
    let prompt = template
        .render_json(messages, true, None, &serde_json::Map::new())
        .unwrap_or_else(|e| panic!("{what}: render: {e}"));
    assert_eq!(
        prompt,
        reference["prompt_text"].as_str().expect("prompt_text"),
        "{what}: prompt"
    );
    let got = tokenizer.encode(&prompt, false).expect("encode prompt");
    assert_eq!(got, ids(&reference["prompt_ids"]), "{what}: prompt ids");
}

#[test]
fn hf_folders_match_transformers() {
    for name in fixture_names() {
        let dir = fixtures().join("models").join(&name);
        let files = ModelFiles::open(dir.to_str().expect("UTF-8 path")).expect("opens");
        assert!(files.tensors().is_some(), "{name}: weights are mapped");
        files
            .config()
            .unwrap_or_else(|e| panic!("{name}: config: {e}"));
        check_assets(&files, &reference(&name), &name);
    }
}

/// The fields a GGUF file must carry over from config.json. Token ids, context length, dtype
/// and Llama-3 rope scaling (baked into a `rope_freqs` tensor by the converter) are not compared;
/// YaRN (DeepSeek) must come through whole.
fn assert_same_shape(gguf: &ModelConfig, hf: &ModelConfig, what: &str) {
    assert_eq!(gguf.architecture, hf.architecture, "{what}: architecture");
    assert_eq!(gguf.vocab_size, hf.vocab_size, "{what}: vocab_size");
    assert_eq!(gguf.hidden_size, hf.hidden_size, "{what}: hidden_size");
    assert_eq!(
        gguf.num_hidden_layers, hf.num_hidden_layers,
        "{what}: layers"
    );
    assert_eq!(gguf.attention, hf.attention, "{what}: attention");
    assert_eq!(gguf.ffn, hf.ffn, "{what}: feed-forward");
    assert_eq!(
        gguf.tie_word_embeddings, hf.tie_word_embeddings,
        "{what}: tied embeddings"
    );
    assert_eq!(gguf.rope.theta, hf.rope.theta, "{what}: rope theta");
    if matches!(
        hf.rope.scaling,
        frugal_formats::config::RopeScaling::Yarn { .. }
    ) {
        assert_eq!(gguf.rope, hf.rope, "{what}: YaRN rope");
    }
    assert!(
        (gguf.rms_norm_eps - hf.rms_norm_eps).abs() < 1e-12,
        "{what}: rms_norm_eps"
    );
}

#[test]
fn gguf_conversions_match_their_hf_folders() {
    let mut checked = 0;
    for name in fixture_names() {
        let dir = fixtures().join("gguf").join(&name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut ggufs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        ggufs.sort();
        let hf = ModelFiles::open(
            fixtures()
                .join("models")
                .join(&name)
                .to_str()
                .expect("UTF-8"),
        )
        .expect("HF fixture opens")
        .config()
        .expect("HF config");
        for path in ggufs {
            let what = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let files = ModelFiles::open(path.to_str().expect("UTF-8")).expect("GGUF opens");
            let cfg = files
                .config()
                .unwrap_or_else(|e| panic!("{what}: config: {e}"));
            assert_same_shape(&cfg, &hf, &what);
            check_assets(&files, &reference(&name), &what);
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "expected GGUF conversions of the fixtures, checked {checked}"
    );
}

/// A split GGUF (llama.cpp's converter, `--split-max-tensors`) opens from either split and holds
/// exactly the tensors, bytes and config of the unsplit file.
#[test]
fn split_gguf_equals_the_unsplit_file() {
    let gguf = fixtures().join("gguf");
    let whole = ModelFiles::open(gguf.join("llama/llama-F32.gguf").to_str().expect("UTF-8"))
        .expect("unsplit opens");
    for split in [
        "llama-F32-00001-of-00002.gguf",
        "llama-F32-00002-of-00002.gguf",
    ] {
        let files = ModelFiles::open(gguf.join("split").join(split).to_str().expect("UTF-8"))
            .expect("split opens");
        assert_eq!(
            files.config().expect("config"),
            whole.config().expect("config"),
            "{split}"
        );
        let (a, b) = (
            files.tensors().expect("tensors"),
            whole.tensors().expect("tensors"),
        );
        let mut names: Vec<_> = a.tensor_infos().into_iter().map(|t| t.name).collect();
        let mut want: Vec<_> = b.tensor_infos().into_iter().map(|t| t.name).collect();
        names.sort();
        want.sort();
        assert_eq!(names, want, "{split}: tensor names");
        for name in &want {
            let (x, y) = (
                a.tensor(name).expect("present"),
                b.tensor(name).expect("present"),
            );
            assert_eq!((x.dtype, &x.shape), (y.dtype, &y.shape), "{split}: {name}");
            assert!(x.data == y.data, "{split}: {name}: bytes differ");
        }
        check_assets(&files, &reference("llama"), split);
    }
}
