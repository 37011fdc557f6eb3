//! GGUF tokenizers against llama.cpp's tokenizer test set: every `.inp`/`.out` pair in
//! `<reference>/vocab/`. The expected ids were produced by the models' Hugging Face tokenizers
//! (llama.cpp's `convert_hf_to_gguf_update.py`); llama.cpp's `test-tokenizer-0` compares them
//! with `tokenize(text, add_special = false, parse_special = false)`, splitting the `.inp` file
//! on `"\n__ggml_vocab_test__\n"` without any further stripping. We do the same (no BOS).

use frugal_engine::tokenizer::Tokenizer;

use frugal_testdata::reference_dir;

fn load(name: &str) -> Tokenizer {
    let path = reference_dir()
        .join("vocab")
        .join(format!("ggml-vocab-{name}.gguf"));
    Tokenizer::from_gguf_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The test strings of `<name>.inp` paired with the ids of `<name>.out`.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = reference_dir().join("vocab");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp")))
        .expect("reading .inp");
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out")))
        .expect("reading .out");
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
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id in .out"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of tests"
    );
    texts.into_iter().zip(ids).collect()
}

fn check(name: &str) {
    let tok = load(name);
    let mut failures = Vec::new();
    let cases = cases(name);
    assert!(!cases.is_empty());
    for (text, want) in &cases {
        let got = tok.encode_plain(text, false).expect("encode");
        assert_eq!(
            got,
            tok.encode(text, false).expect("encode"),
            "no special tokens in {text:?}"
        );
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
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
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

/// Streams the reference ids of every test string: the pieces arrive as soon as their text is
/// complete and add up to `decode`.
fn check_stream(name: &str) {
    let tok = load(name);
    let extra: Vec<u32> = {
        // A text whose characters are split over byte tokens in every vocabulary here.
        tok.encode("🦙🚀 中文 ½ Äpfel 👨‍👩‍👧", false).expect("encode")
    };
    for (text, ids) in cases(name)
        .iter()
        .map(|(t, i)| (t.as_str(), i.clone()))
        .chain([("extra", extra)])
    {
        let mut stream = tok.decode_stream(false);
        let mut emitted = String::new();
        for (i, &id) in ids.iter().enumerate() {
            if let Some(p) = stream.step(id).expect("step") {
                emitted.push_str(&p);
            }
            let prefix = tok.decode(&ids[..=i], false).expect("decode");
            assert!(
                prefix.starts_with(&emitted),
                "{name} {text:?}: {emitted:?} vs {prefix:?}"
            );
            let rest = &prefix[emitted.len()..];
            assert!(
                rest.chars().all(|c| c == '\u{FFFD}') && rest.chars().count() <= 3,
                "{name} {text:?}: {rest:?}"
            );
        }
        if let Some(t) = stream.flush() {
            emitted.push_str(&t);
        }
        assert_eq!(
            emitted,
            tok.decode(&ids, false).expect("decode"),
            "{name} {text:?}"
        );
    }
}

#[test]
fn streaming_llama_spm() {
    check_stream("llama-spm");
}
#[test]
fn streaming_qwen2() {
    check_stream("qwen2");
}
#[test]
fn streaming_deepseek_llm() {
    check_stream("deepseek-llm");
}

#[test]
fn special_tokens_in_text_are_single_ids() {
    let tok = load("qwen2");
    let (start, end) = (151644, 151645);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(start));
    let ids = tok
        .encode("<|im_start|>user\nHi!<|im_end|>\n", false)
        .expect("encode");
    let user = tok.encode("user\nHi!", false).expect("encode");
    let nl = tok.encode("\n", false).expect("encode");
    let want: Vec<u32> = [vec![start], user, vec![end], nl].concat();
    assert_eq!(ids, want);
    assert!(tok.is_special(start));
    assert_eq!(
        tok.decode(&ids, false).expect("decode"),
        "<|im_start|>user\nHi!<|im_end|>\n"
    );
    assert_eq!(tok.decode(&ids, true).expect("decode"), "user\nHi!\n");
    assert_eq!(tok.token_bytes(start), Some(b"<|im_start|>".to_vec()));
    // Untrusted text: the marker stays text.
    let plain = tok.encode_plain("<|im_start|>user", false).expect("encode");
    assert!(!plain.contains(&start) && plain.len() > 2, "{plain:?}");
    assert_eq!(
        tok.decode(&plain, false).expect("decode"),
        "<|im_start|>user"
    );

    // SentencePiece: a text fragment after a control token gets the space prefix again.
    let spm = load("llama-spm");
    let ids = spm.encode("Hello</s>world", true).expect("encode");
    let hello = spm.encode("Hello", false).expect("encode");
    let world = spm.encode("world", false).expect("encode");
    assert_eq!(ids, [vec![1], hello, vec![2], world].concat());
    assert_eq!(spm.decode(&ids, true).expect("decode"), "Hello world");
}

#[test]
fn bos_eos_and_lookups() {
    let spm = load("llama-spm");
    assert_eq!(
        (spm.bos_id(), spm.eos_id(), spm.vocab_size()),
        (Some(1), Some(2), 32000)
    );
    assert_eq!(spm.encode("", true).expect("encode"), vec![1]);
    assert_eq!(spm.encode("", false).expect("encode"), Vec::<u32>::new());
    assert_eq!(spm.token_bytes(13), Some(vec![b'\n']), "<0x0A>");
    assert_eq!(spm.id_to_token(13).as_deref(), Some("<0x0A>"));
    let ds = load("deepseek-llm");
    assert_eq!(
        ds.encode("Hi", true).expect("encode")[0],
        100000,
        "deepseek-llm adds BOS"
    );
    let q = load("qwen2");
    assert_eq!(
        q.encode("Hi", true).expect("encode"),
        q.encode("Hi", false).expect("encode"),
        "qwen2 adds none"
    );
    assert!(q.decode(&[u32::MAX], false).is_err());
    assert!(q.token_bytes(u32::MAX).is_none());
}

#[test]
fn bad_vocabularies_give_clear_errors() {
    use frugal_engine::tokenizer::GgufVocab;
    let base = GgufVocab {
        model: "gpt2".into(),
        pre: Some("qwen2".into()),
        tokens: vec!["a".into(), "b".into(), "ab".into()],
        merges: vec!["a b".into()],
        ..GgufVocab::default()
    };
    assert!(Tokenizer::from_gguf_vocab(base.clone()).is_ok());
    let err = |v: GgufVocab| {
        Tokenizer::from_gguf_vocab(v)
            .expect_err("must fail")
            .to_string()
    };

    let e = err(GgufVocab {
        pre: Some("mystery-pre".into()),
        ..base.clone()
    });
    assert!(
        e.contains("mystery-pre") && e.contains("deepseek-v3") && e.contains("llama-bpe"),
        "{e}"
    );
    let e = err(GgufVocab {
        model: "rwkv".into(),
        ..base.clone()
    });
    assert!(e.contains("rwkv"), "{e}");
    let e = err(GgufVocab {
        tokens: vec![],
        ..base.clone()
    });
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
    let e = err(GgufVocab {
        merges: vec!["nospace".into()],
        ..base.clone()
    });
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = err(GgufVocab {
        token_types: vec![1],
        ..base.clone()
    });
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
    let e = err(GgufVocab {
        eos_id: Some(99),
        ..base.clone()
    });
    assert!(e.contains("eos_token_id"), "{e}");
    let e = err(GgufVocab {
        add_bos: Some(true),
        ..base.clone()
    });
    assert!(e.contains("bos"), "{e}");

    // From metadata: missing and mistyped keys.
    use frugal_formats::gguf::{MetaValue, Metadata};
    let mut md = Metadata::new();
    let e = Tokenizer::from_gguf_metadata(&md)
        .expect_err("no keys")
        .to_string();
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
    md.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String("llama".into()),
    )
    .expect("insert");
    md.insert("tokenizer.ggml.tokens".into(), MetaValue::U32(3))
        .expect("insert");
    let e = Tokenizer::from_gguf_metadata(&md)
        .expect_err("mistyped tokens")
        .to_string();
    assert!(
        e.contains("tokenizer.ggml.tokens") && e.contains("array of strings"),
        "{e}"
    );

    // A file that is not GGUF.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("x.gguf");
    std::fs::write(&p, b"not a gguf file").expect("write");
    let e = Tokenizer::from_gguf_file(&p)
        .expect_err("not gguf")
        .to_string();
    assert!(e.contains("x.gguf"), "{e}");
}
