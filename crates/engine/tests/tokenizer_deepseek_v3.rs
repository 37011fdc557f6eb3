//! The DeepSeek-V3/R1 tokenizer against the Hugging Face `tokenizers` library (Python):
//! `fixtures/tokenizer/deepseek-v3/refs.json`, written by `fixtures/tokenizer/make_tokenizer_refs.py`
//! from the committed `tokenizer.json`. Checked twice: through the `tokenizers` crate
//! ([`Tokenizer::from_tokenizer_json`]) and through our own byte-level BPE with the `deepseek-v3`
//! pre-tokenizer, fed the same vocabulary and merges as a GGUF file would hold them.

use std::path::PathBuf;

use frugal_engine::tokenizer::{GgufVocab, Tokenizer};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    frugal_testdata::fixtures_dir().join("tokenizer/deepseek-v3")
}

struct Case {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
    decode: String,
    decode_skip_special: String,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture_dir().join("refs.json")).expect("reading refs.json");
    let v: Value = serde_json::from_str(&text).expect("parsing refs.json");
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            ids: ids(&c["ids"]),
            ids_with_special: ids(&c["ids_with_special"]),
            decode: c["decode"].as_str().expect("decode").to_string(),
            decode_skip_special: c["decode_skip_special"]
                .as_str()
                .expect("decode")
                .to_string(),
        })
        .collect()
}

fn hf() -> Tokenizer {
    Tokenizer::from_tokenizer_json(fixture_dir().join("tokenizer.json"))
        .expect("loading tokenizer.json")
}

/// The vocabulary of `tokenizer.json` laid out as GGUF's `tokenizer.ggml.*` arrays: added
/// tokens marked `special` become control tokens (type 3), the others user-defined (type 4).
fn gguf_style() -> Tokenizer {
    let text = std::fs::read_to_string(fixture_dir().join("tokenizer.json"))
        .expect("reading tokenizer.json");
    let v: Value = serde_json::from_str(&text).expect("parsing tokenizer.json");
    let vocab = v["model"]["vocab"].as_object().expect("model.vocab");
    let added = v["added_tokens"].as_array().expect("added_tokens");
    let n = vocab
        .values()
        .map(|i| i.as_u64().expect("id"))
        .chain(added.iter().map(|a| a["id"].as_u64().expect("id")))
        .max()
        .expect("non-empty") as usize
        + 1;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[UNUSED_{i}]")).collect();
    let mut types = vec![5i64; n];
    for (s, i) in vocab {
        let i = i.as_u64().expect("id") as usize;
        tokens[i] = s.clone();
        types[i] = 1;
    }
    for a in added {
        let i = a["id"].as_u64().expect("id") as usize;
        tokens[i] = a["content"].as_str().expect("content").to_string();
        types[i] = if a["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
    }
    let merges = v["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!(
                "{} {}",
                p[0].as_str().expect("merge"),
                p[1].as_str().expect("merge")
            ),
            other => panic!("unexpected merge {other}"),
        })
        .collect();
    Tokenizer::from_gguf_vocab(GgufVocab {
        model: "gpt2".into(),
        pre: Some("deepseek-v3".into()),
        tokens,
        token_types: types,
        merges,
        bos_id: Some(0),
        eos_id: Some(1),
        add_bos: Some(false),
        ..GgufVocab::default()
    })
    .expect("building the GGUF-style tokenizer")
}

/// Streams `ids` and checks that each piece comes as soon as its text is complete and that
/// the pieces add up to `decode`.
fn check_stream(tok: &Tokenizer, ids: &[u32], what: &str) {
    let mut stream = tok.decode_stream(false);
    let mut emitted = String::new();
    for (i, &id) in ids.iter().enumerate() {
        if let Some(piece) = stream.step(id).expect("stream step") {
            assert!(!piece.is_empty());
            emitted.push_str(&piece);
        }
        let prefix = tok.decode(&ids[..=i], false).expect("decode");
        // Everything decodable so far has been emitted; what is held back is an unfinished
        // character, which a full decode shows as U+FFFD.
        assert!(
            prefix.starts_with(&emitted),
            "{what}: emitted {emitted:?} is not a prefix of {prefix:?}"
        );
        let rest = &prefix[emitted.len()..];
        assert!(
            rest.chars().all(|c| c == '\u{FFFD}') && rest.chars().count() <= 3,
            "{what}: {rest:?} held back"
        );
    }
    if let Some(tail) = stream.flush() {
        emitted.push_str(&tail);
    }
    assert_eq!(emitted, tok.decode(ids, false).expect("decode"), "{what}");
}

#[test]
fn hf_tokenizer_matches_python_tokenizers() {
    let tok = hf();
    let cases = cases();
    assert!(cases.len() > 50);
    let mut failures = Vec::new();
    for c in &cases {
        let got = tok.encode(&c.text, false).expect("encode");
        if got != c.ids {
            failures.push(format!(
                "encode {:?}\n  want {:?}\n  got  {:?}",
                c.text, c.ids, got
            ));
        }
        let got = tok.encode(&c.text, true).expect("encode");
        if got != c.ids_with_special {
            failures.push(format!("encode+special {:?}", c.text));
        }
        if tok.decode(&c.ids, false).expect("decode") != c.decode {
            failures.push(format!("decode {:?}", c.text));
        }
        if tok.decode(&c.ids, true).expect("decode") != c.decode_skip_special {
            failures.push(format!("decode skip {:?}", c.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn own_bpe_with_deepseek_v3_pre_matches_python_tokenizers() {
    let tok = gguf_style();
    let mut failures = Vec::new();
    for c in &cases() {
        let got = tok.encode(&c.text, false).expect("encode");
        if got != c.ids {
            failures.push(format!(
                "encode {:?}\n  want {:?}\n  got  {:?}",
                c.text, c.ids, got
            ));
        }
        if tok.decode(&c.ids, false).expect("decode") != c.decode {
            failures.push(format!("decode {:?}", c.text));
        }
        if tok.decode(&c.ids, true).expect("decode") != c.decode_skip_special {
            failures.push(format!("decode skip {:?}", c.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn special_ids_and_lookups() {
    let tok = hf();
    assert_eq!(tok.vocab_size(), 129280);
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_id(), Some(1));
    assert_eq!(tok.token_to_id("<｜User｜>"), Some(128803));
    assert_eq!(tok.id_to_token(128803).as_deref(), Some("<｜User｜>"));
    assert!(tok.is_special(0) && tok.is_special(1));
    assert!(
        !tok.is_special(128803),
        "<｜User｜> is a non-special added token in this file"
    );
    assert_eq!(tok.token_bytes(223), Some(b" ".to_vec()));
    assert_eq!(
        tok.token_bytes(128803),
        Some("<｜User｜>".as_bytes().to_vec())
    );
    assert!(tok.token_bytes(10_000_000).is_none());
    // Untrusted text: BOS (special) stays text; <｜User｜> (non-special added) is still matched.
    let plain = tok
        .encode_plain("<｜begin▁of▁sentence｜><｜User｜>", false)
        .expect("encode");
    assert!(
        !plain.contains(&0) && plain.last() == Some(&128803),
        "{plain:?}"
    );
    let own = gguf_style()
        .encode_plain("<｜begin▁of▁sentence｜><｜User｜>", false)
        .expect("encode");
    assert_eq!(own, plain);
    assert!(tok.decode(&[10_000_000], false).is_err());
}

#[test]
fn streaming_matches_decode() {
    let hf = hf();
    let own = gguf_style();
    for c in &cases() {
        check_stream(&hf, &c.ids, &c.text);
        check_stream(&own, &c.ids, &c.text);
    }
    // Single bytes of a 4-byte emoji, then a stray continuation byte: held back, then U+FFFD.
    let bytes_of = |b: u8| -> u32 {
        let c = frugal_engine::tokenizer::bpe::ByteLevel::new().char_of(b);
        hf.token_to_id(&c.to_string()).expect("byte token")
    };
    let ids: Vec<u32> = "🦙"
        .bytes()
        .map(bytes_of)
        .chain([bytes_of(0x80), bytes_of(b'a')])
        .collect();
    check_stream(&hf, &ids, "split emoji");
    check_stream(&own, &ids, "split emoji");
    let mut s = hf.decode_stream(false);
    let pieces: Vec<Option<String>> = ids.iter().map(|&i| s.step(i).expect("step")).collect();
    assert_eq!(
        pieces,
        vec![
            None,
            None,
            None,
            Some("🦙".into()),
            Some("\u{FFFD}".into()),
            Some("a".into())
        ]
    );
}

#[test]
fn bad_files_give_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("tokenizer.json");
    let e = Tokenizer::from_tokenizer_json(&missing).expect_err("missing file");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::write(&missing, "{\"model\": 3").expect("write");
    let e = Tokenizer::from_tokenizer_json(&missing).expect_err("truncated file");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn add_bos_token_of_tokenizer_config_is_honoured() {
    // The same tokenizer.json with a config asking for BOS, as DeepSeek's hub repos do.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixture_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"add_bos_token": true, "bos_token": {"content": "<｜begin▁of▁sentence｜>"}, "eos_token": "<｜end▁of▁sentence｜>"}"#,
    )
    .expect("write");
    let tok = Tokenizer::from_tokenizer_json(dir.path().join("tokenizer.json")).expect("load");
    let plain = tok.encode("Hi", false).expect("encode");
    assert_eq!(
        tok.encode("Hi", true).expect("encode"),
        [vec![0], plain].concat()
    );
    // A text that already starts with BOS does not get a second one.
    let ids = tok
        .encode("<｜begin▁of▁sentence｜>Hi", true)
        .expect("encode");
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 1);
    assert_eq!(tok.eos_id(), Some(1));
}
