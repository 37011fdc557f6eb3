//! `frugal run` end to end: greedy continuations through the CLI must equal transformers'
//! `generate` on the fixtures (`fixtures/models/NAME/reference.json`, `greedy_new_ids`),
//! and the embedded default model must run with no `--model`.

use std::process::{Command, Output};

use serde_json::Value;

fn frugal(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("running frugal")
}

fn reference(name: &str) -> Value {
    let path = frugal_testdata::fixtures_dir()
        .join("models")
        .join(name)
        .join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).expect("JSON")
}

/// `frugal run --format json` greedy on `r`'s prompt ids must generate transformers' ids;
/// returns the JSON object.
fn assert_greedy_tokens(
    name: &str,
    model: &std::path::Path,
    r: &Value,
    cache: &std::path::Path,
) -> Value {
    let max = r["max_new_tokens"].to_string();
    let out = frugal(
        &[
            "run",
            "--model",
            model.to_str().expect("UTF-8"),
            "--prompt-tokens",
            &csv(&r["prompt_ids"]),
            "--temperature",
            "0",
            "--max-tokens",
            &max,
            "--format",
            "json",
        ],
        cache,
    );
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(got["tokens"], r["greedy_new_ids"], "{name}");
    got
}

fn csv(v: &Value) -> String {
    let ids: Vec<String> = v
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.to_string())
        .collect();
    ids.join(",")
}

#[test]
fn greedy_run_equals_transformers_generate() {
    let cache = tempfile::tempdir().expect("temp dir");
    for name in [
        "deepseek-v3",
        "deepseek-v2-lite",
        "deepseek-v2",
        "deepseek-v3-bf16",
        "deepseek-v3-fp8",
        "qwen2",
        "qwen2-tied-swa",
        "llama",
        "qwen3-moe",
        "mixtral",
    ] {
        let r = reference(name);
        let model = frugal_testdata::fixtures_dir().join("models").join(name);
        let got = assert_greedy_tokens(name, &model, &r, cache.path());
        assert_eq!(
            got["usage"]["prompt_tokens"],
            r["prompt_ids"].as_array().expect("ids").len()
        );
    }
}

#[test]
fn default_model_answers_with_its_chat_template() {
    let cache = tempfile::tempdir().expect("temp dir");
    // No sampling flags: the model's generation_config.json asks for greedy decoding.
    let args = ["run", "What is 4821 + 377?", "--format", "json"];
    let first = frugal(&args, cache.path());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let got: Value = serde_json::from_slice(&first.stdout).expect("one JSON object");
    // The R1 template opens `<think>` in the prompt: the column-by-column working is reasoning,
    // and the answer after `</think>` is the content.
    assert_eq!(got["content"], "The answer is 5198.", "{got}");
    let reasoning = got["reasoning"].as_str().expect("reasoning");
    assert!(reasoning.starts_with("1: 1+7+0=8 c0"), "{reasoning}");
    assert!(reasoning.ends_with("| 5198"), "{reasoning}");
    assert_eq!(got["finish_reason"], "stop");
    // BOS, <｜User｜>, one token per byte of the question, <｜Assistant｜>, <think>, "\n".
    assert_eq!(got["usage"]["prompt_tokens"], 2 + 19 + 3);
    // Greedy: the second run (which reuses the unpacked model) says the same.
    let second = frugal(&args, cache.path());
    assert_eq!(first.stdout, second.stdout);

    // On a pipe, plain text: the reasoning block as generated, then the answer.
    let text = frugal(&["run", "What is 4821 - 377?"], cache.path());
    let text = String::from_utf8(text.stdout).expect("UTF-8");
    assert!(
        text.ends_with("</think>\n\nThe answer is 4444.\n"),
        "{text:?}"
    );
    assert!(text.contains("1: 1-7-0=4 b1 |    4\n"), "{text:?}");
}

#[test]
fn bad_requests_fail_with_one_line() {
    let cache = tempfile::tempdir().expect("temp dir");
    let model = frugal_testdata::fixtures_dir().join("models/deepseek-v3");
    let model = model.to_str().expect("UTF-8");
    // One more token than max_position_embeddings (40960); single digits keep the argument short.
    let long: Vec<&str> = vec!["7"; 40_961];
    let long = long.join(",");
    for (args, needle) in [
        (
            vec!["run", "--model", model, "--prompt-tokens", long.as_str()],
            "context",
        ),
        (
            vec!["run", "--model", model, "--prompt-tokens", "1,99999"],
            "99999",
        ),
        (
            vec!["run", "--model", model, "hi", "--top-p", "1.5"],
            "top_p",
        ),
        (vec!["run", "--model", model], "prompt"),
    ] {
        let out = frugal(&args, cache.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The text path end to end: the user message goes through the model's chat template and
/// tokenizer, the answer is streamed, and what reaches stdout is transformers' decode of its own
/// greedy continuation (`greedy_new_text`), for the R1 template (deepseek-v3), the
/// V2-Lite-Chat template (deepseek-v2-lite), the R1-Distill template (qwen2, llama: the prompt
/// ends inside the opened think block) and Mixtral-Instruct's (SentencePiece). qwen3-moe is not
/// here: its continuation ends with the stop token `<|im_end|>`, which transformers' decode keeps
/// in `greedy_new_text` and `frugal run` (rightly) does not print; its ids are checked above.
#[test]
fn streamed_text_equals_transformers_decode() {
    let cache = tempfile::tempdir().expect("temp dir");
    for name in [
        "deepseek-v3",
        "deepseek-v2-lite",
        "qwen2",
        "llama",
        "mixtral",
    ] {
        let r = reference(name);
        let model = frugal_testdata::fixtures_dir().join("models").join(name);
        let question = r["messages"][0]["content"].as_str().expect("user message");
        let max = r["max_new_tokens"].to_string();
        let out = frugal(
            &[
                "run",
                "--model",
                model.to_str().expect("UTF-8"),
                question,
                "--temperature",
                "0",
                "--max-tokens",
                &max,
            ],
            cache.path(),
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!("{}\n", r["greedy_new_text"].as_str().expect("text"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{name}");
    }
}

/// The reasoning split: the R1 and R1-Distill templates open `<think>` inside the prompt, so a
/// continuation with no `</think>` is all reasoning, left unclosed at the token limit; the JSON
/// carries it apart from the (empty) answer, and `--hide-thinking` prints only the answer.
#[test]
fn reasoning_is_reported_apart_from_the_answer() {
    let cache = tempfile::tempdir().expect("temp dir");
    for name in ["deepseek-v3", "qwen2"] {
        let r = reference(name);
        let model = frugal_testdata::fixtures_dir().join("models").join(name);
        let model = model.to_str().expect("UTF-8");
        let question = r["messages"][0]["content"].as_str().expect("user message");
        let max = r["max_new_tokens"].to_string();
        let base = [
            "run",
            "--model",
            model,
            question,
            "--temperature",
            "0",
            "--max-tokens",
            &max,
        ];
        let out = frugal(&[&base[..], &["--format", "json"]].concat(), cache.path());
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let text = r["greedy_new_text"].as_str().expect("text");
        assert!(
            !text.contains("</think>"),
            "{name}: the fixture continuation closes the block"
        );
        assert_eq!(got["reasoning"], text.trim(), "{name}");
        assert_eq!(got["content"], "", "{name}");
        assert_eq!(got["reasoning_unclosed"], true, "{name}");

        let hidden = frugal(&[&base[..], &["--hide-thinking"]].concat(), cache.path());
        assert!(hidden.status.success());
        assert_eq!(String::from_utf8_lossy(&hidden.stdout), "\n", "{name}");
    }
}

/// The same greedy continuations from llama.cpp's F32 GGUF conversions (names mapped, llama.cpp's
/// q/k permutation and split `kv_b` handled, GGUF vocabulary): equal to transformers' `generate`.
#[test]
fn greedy_run_on_gguf_equals_transformers_generate() {
    let cache = tempfile::tempdir().expect("temp dir");
    for name in [
        "deepseek-v3",
        "deepseek-v2-lite",
        "deepseek-v2",
        "qwen2",
        "llama",
        "qwen3-moe",
        "mixtral",
    ] {
        let r = reference(name);
        let gguf = frugal_testdata::fixtures_dir()
            .join("gguf")
            .join(name)
            .join(format!("{name}-F32.gguf"));
        assert_greedy_tokens(name, &gguf, &r, cache.path());
    }
}

/// An expert cache of two slots (`--expert-cache`: every layer evicts and re-reads experts
/// from the file) changes nothing: the greedy continuations of the MoE GGUFs still equal
/// transformers' `generate`, and `--stats` reports the misses and evictions.
#[test]
fn greedy_run_with_a_tiny_expert_cache_equals_transformers_generate() {
    let cache = tempfile::tempdir().expect("temp dir");
    for name in ["deepseek-v3", "deepseek-v2-lite", "qwen3-moe", "mixtral"] {
        let r = reference(name);
        let gguf = frugal_testdata::fixtures_dir()
            .join("gguf")
            .join(name)
            .join(format!("{name}-F32.gguf"));
        // Learn the slot size from a run with no slots, then give the cache two.
        let probe = frugal(
            &[
                "run",
                "--model",
                gguf.to_str().expect("UTF-8"),
                "--prompt-tokens",
                &csv(&r["prompt_ids"]),
                "--temperature",
                "0",
                "--max-tokens",
                "1",
                "--format",
                "json",
                "--expert-cache",
                "1",
            ],
            cache.path(),
        );
        assert!(
            probe.status.success(),
            "{}",
            String::from_utf8_lossy(&probe.stderr)
        );
        let max = r["max_new_tokens"].to_string();
        let mut args = vec![
            "run".to_owned(),
            "--model".to_owned(),
            gguf.to_str().expect("UTF-8").to_owned(),
            "--prompt-tokens".to_owned(),
            csv(&r["prompt_ids"]),
            "--temperature".to_owned(),
            "0".to_owned(),
            "--max-tokens".to_owned(),
            max,
            "--format".to_owned(),
            "json".to_owned(),
            "--stats".to_owned(),
        ];
        let slot = slot_bytes(&String::from_utf8_lossy(&probe.stderr));
        args.extend(["--expert-cache".to_owned(), (2 * slot).to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = frugal(&args, cache.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(got["tokens"], r["greedy_new_ids"], "{name}");
        assert!(stderr.contains("fit in 2 slots"), "{name}: {stderr}");
        let evictions = count_before(&stderr, " evictions");
        let misses = count_before(&stderr, " misses");
        assert!(evictions > 0 && misses > 0, "{name}: {stderr}");
    }
}

/// The number just before `what` in `text`.
fn count_before(text: &str, what: &str) -> u64 {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {text}"));
    let digits: String = text[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count before {what:?} in {text}"))
}

/// `slot bytes N` from the cache's first line.
fn slot_bytes(stderr: &str) -> u64 {
    count_before(stderr, " bytes per slot")
}

#[test]
fn bad_memory_budgets_are_named() {
    let cache = tempfile::tempdir().expect("temp dir");
    let gguf = frugal_testdata::fixtures_dir()
        .join("gguf")
        .join("qwen3-moe")
        .join("qwen3-moe-F32.gguf");
    for (budget, says) in [
        ("abc", "--max-memory: \"abc\" is not a size"),
        ("1K", "--max-memory 1K: a budget of 1024 bytes is too small"),
    ] {
        let out = frugal(
            &[
                "run",
                "--model",
                gguf.to_str().expect("UTF-8"),
                "--prompt-tokens",
                "1,2,3",
                "--max-memory",
                budget,
            ],
            cache.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{budget}: {stderr}");
        assert!(stderr.contains(says), "{budget}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A dense model has no experts to cache.
    let dense = frugal_testdata::fixtures_dir()
        .join("gguf")
        .join("qwen2")
        .join("qwen2-F32.gguf");
    let out = frugal(
        &[
            "run",
            "--model",
            dense.to_str().expect("UTF-8"),
            "--prompt-tokens",
            "1,2",
            "--max-memory",
            "4G",
        ],
        cache.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("mixture-of-experts"));
}
