//! The embedded default model through `frugal run` (no `--model`) against transformers' greedy
//! `generate` on held-out arithmetic problems (`assets/default-model/eval/greedy.json`, written by
//! `tools/train_default_model.py`).
//!
//! `sample_equals_transformers` runs the fixture's first 50 problems; the ignored
//! `all_held_out_problems` runs all 1,000 and prints the accuracy:
//!
//! ```text
//! cargo test -p frugal-cli --test default_model -- --ignored --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/default-model/eval/greedy.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("greedy.json")).expect("JSON")
}

/// What frugal did on one problem.
struct Outcome {
    /// Same generated ids as transformers.
    equal: bool,
    /// The answer (content after the reasoning) is the right number.
    correct: bool,
}

fn run_problem(p: &Value, cache: &Path) -> Outcome {
    let question = p["question"].as_str().expect("question");
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["run", question, "--max-tokens", "200", "--format", "json"])
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("running frugal");
    assert!(
        out.status.success(),
        "{question}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // The template renders the same prompt tokens as transformers' apply_chat_template.
    assert_eq!(
        got["usage"]["prompt_tokens"],
        p["prompt_ids"].as_array().expect("ids").len(),
        "{question}"
    );
    let want = p["generated_ids"].as_array().expect("ids");
    let tokens = got["tokens"].as_array().expect("tokens");
    let equal = tokens == want;
    if !equal {
        eprintln!(
            "{question}: frugal {:?}\n  transformers {:?}",
            got["text"], p["generated_text"]
        );
    }
    let expected = p["expected"].as_i64().expect("expected");
    let correct = got["content"] == format!("The answer is {expected}.").as_str();
    if equal {
        // Reasoning and answer were split at `</think>` (the template opened the block).
        assert!(
            got["reasoning"]
                .as_str()
                .is_some_and(|r| r.starts_with("1: ") || r.starts_with("a<b")),
            "{question}: {got}"
        );
        assert_eq!(correct, p["correct"] == true, "{question}: {got}");
    }
    Outcome { equal, correct }
}

/// Runs `problems` and returns (equal to transformers, correct) counts.
fn run_all(problems: &[Value]) -> (usize, usize) {
    let cache = tempfile::tempdir().expect("temp dir");
    let (mut equal, mut correct) = (0, 0);
    for p in problems {
        let o = run_problem(p, cache.path());
        equal += o.equal as usize;
        correct += o.correct as usize;
    }
    (equal, correct)
}

#[test]
fn sample_equals_transformers() {
    let f = fixture();
    let n = f["sample"].as_u64().expect("sample") as usize;
    let problems = &f["problems"].as_array().expect("problems")[..n];
    let (equal, correct) = run_all(problems);
    eprintln!(
        "default model, {n} held-out problems: {equal} equal to transformers, {correct} correct"
    );
    assert_eq!(
        equal, n,
        "frugal's greedy output differs from transformers'"
    );
    // The model is trained to at least 95% on the held-out set; the sample must not fall far off.
    assert!(correct * 100 >= n * 90, "{correct}/{n} correct");
}

#[test]
#[ignore = "runs 1,000 problems; see the module docs"]
fn all_held_out_problems() {
    let f = fixture();
    let problems = f["problems"].as_array().expect("problems");
    let (equal, correct) = run_all(problems);
    let n = problems.len();
    let reference = f["correct"].as_u64().expect("correct");
    println!(
        "default model, {n} held-out problems: {equal} equal to transformers' greedy output; \
         frugal {correct} correct ({:.1}%), transformers {reference} correct",
        100.0 * correct as f64 / n as f64
    );
    assert_eq!(equal, n);
}
