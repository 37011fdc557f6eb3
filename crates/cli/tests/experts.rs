//! `frugal experts` end to end: the per-layer expert counts it records for a fixture's prompt
//! must equal the counts of the experts transformers routed for the same prompt
//! (`fixtures/models/NAME/reference.safetensors`, `routed_experts` `[moe layers, tokens, k]`),
//! saved traces must replay to the same report, and bad input must give clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn frugal(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("running frugal")
}

fn model_dir(name: &str) -> PathBuf {
    frugal_testdata::fixtures_dir().join("models").join(name)
}

fn reference(name: &str) -> Value {
    let path = model_dir(name).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).expect("JSON")
}

/// transformers' routed experts `[moe layers][tokens][k]`.
fn reference_routing(name: &str) -> Vec<Vec<Vec<i32>>> {
    let bytes = std::fs::read(model_dir(name).join("reference.safetensors")).expect("reference");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let t = st.tensor("routed_experts").expect("routed_experts");
    assert_eq!(t.dtype(), safetensors::Dtype::I32);
    let (layers, tokens, k) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    let v: Vec<i32> = t
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (0..layers)
        .map(|l| {
            (0..tokens)
                .map(|i| v[(l * tokens + i) * k..(l * tokens + i + 1) * k].to_vec())
                .collect()
        })
        .collect()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn counts(layer: &Value) -> Vec<u64> {
    layer["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c.as_u64().expect("count"))
        .collect()
}

#[test]
fn counts_equal_transformers_routing() {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["deepseek-v3", "qwen3-moe", "mixtral"] {
        let r = reference(name);
        let prompt = dir.path().join(format!("{name}.txt"));
        std::fs::write(&prompt, r["messages"][0]["content"].as_str().expect("text"))
            .expect("prompt file");
        let trace = dir.path().join(format!("{name}.trace.json"));
        let model = model_dir(name);
        let got = ok_json(&frugal(
            &[
                "experts",
                "--model",
                model.to_str().expect("UTF-8"),
                "--prompt-file",
                prompt.to_str().expect("UTF-8"),
                "--json",
                "--simulate-cache",
                "100%,3",
                "--save-trace",
                trace.to_str().expect("UTF-8"),
            ],
            dir.path(),
        ));
        let n_prompt = r["prompt_ids"].as_array().expect("ids").len();
        assert_eq!(
            got["tokens"], n_prompt,
            "{name}: the chat template's tokens"
        );
        assert_eq!(got["moe_layers"], r["checks"]["moe_layers"], "{name}");
        // Expert bytes: the routed experts' tensors as the safetensors header lists them.
        let st_bytes = std::fs::read(model.join("model.safetensors")).expect("weights");
        let st = safetensors::SafeTensors::deserialize(&st_bytes).expect("safetensors");
        let want: u64 = st
            .tensors()
            .iter()
            .filter(|(n, _)| n.contains(".experts."))
            .map(|(_, t)| t.data().len() as u64)
            .sum();
        assert!(want > 0);
        assert_eq!(got["total_expert_bytes"], want, "{name}: expert bytes");

        // Expected counts from transformers' routing of the same tokens.
        let routing = reference_routing(name);
        let layers = got["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), routing.len(), "{name}");
        let e = got["num_experts"].as_u64().expect("E") as usize;
        let mut distinct_total = 0;
        for (l, (ours, theirs)) in layers.iter().zip(&routing).enumerate() {
            let mut want = vec![0u64; e];
            for tok in theirs {
                for &x in tok {
                    want[x as usize] += 1;
                }
            }
            assert_eq!(counts(ours), want, "{name}: MoE layer {l} counts");
            let distinct = want.iter().filter(|&&c| c > 0).count();
            assert_eq!(ours["distinct"], distinct, "{name}: layer {l}");
            distinct_total += distinct as u64;
        }

        // A cache holding every expert misses only each used expert's first use, whatever
        // the policy; 3 experts cannot hold one token's choices of all layers, so they miss more.
        let k = routing[0][0].len() as u64;
        let accesses = n_prompt as u64 * routing.len() as u64 * k;
        let cache = got["cache"].as_array().expect("cache");
        assert_eq!(cache.len(), 8, "4 policies × 2 capacities");
        for sim in &cache[..4] {
            assert_eq!(sim["accesses"], accesses, "{name}");
            assert_eq!(
                sim["hits"].as_u64().expect("hits"),
                accesses - distinct_total,
                "{name}: {sim}"
            );
        }
        for sim in &cache[4..] {
            assert_eq!(sim["unit"], "experts");
            assert!(sim["hits"].as_u64().expect("hits") < accesses - distinct_total);
        }

        // The saved trace replays to the same report.
        let replay = ok_json(&frugal(
            &[
                "experts",
                "--trace",
                trace.to_str().expect("UTF-8"),
                "--json",
                "--simulate-cache",
                "100%,3",
            ],
            dir.path(),
        ));
        assert_eq!(replay, got, "{name}: replayed trace");
    }
}

#[test]
fn default_model_generates_and_prints_a_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prompt = dir.path().join("p.txt");
    // Two prompts (the blank line between them is skipped).
    std::fs::write(&prompt, "What is 12 + 30?\n\nWhat is 7 * 8?\n").expect("prompt file");
    let p = prompt.to_str().expect("UTF-8");
    let seqs = |max: &str| -> Vec<u64> {
        let out = ok_json(&frugal(
            &["experts", "--prompt-file", p, "--max-tokens", max, "--json"],
            dir.path(),
        ));
        out["sequences"]
            .as_array()
            .expect("sequences")
            .iter()
            .map(|n| n.as_u64().expect("length"))
            .collect()
    };
    let prompt_only = seqs("0");
    let generated = seqs("4");
    assert_eq!(prompt_only.len(), 2);
    assert_eq!(generated.len(), 2);
    // Up to 4 greedy tokens each (fewer when the model ends its answer).
    for (g, p) in generated.iter().zip(&prompt_only) {
        assert!(
            *p > 0 && g >= p && *g <= p + 4,
            "{generated:?} vs {prompt_only:?}"
        );
    }

    // The trained default model answers and ends with EOS: the greedy tokens recorded are
    // `frugal run`'s (the generation loop's) up to, not including, the EOS.
    let run = ok_json(&frugal(
        &[
            "run",
            "--temperature",
            "0",
            "--max-tokens",
            "64",
            "--format",
            "json",
            "What is 3 + 9?",
        ],
        dir.path(),
    ));
    assert_eq!(run["finish_reason"], "stop", "{run}");
    let one = dir.path().join("one.txt");
    std::fs::write(&one, "What is 3 + 9?\n").expect("prompt file");
    let got = ok_json(&frugal(
        &[
            "experts",
            "--prompt-file",
            one.to_str().expect("UTF-8"),
            "--max-tokens",
            "64",
            "--json",
        ],
        dir.path(),
    ));
    let want = run["usage"]["prompt_tokens"].as_u64().expect("n")
        + run["usage"]["completion_tokens"].as_u64().expect("n")
        - 1;
    assert_eq!(got["sequences"][0], want);

    let out = frugal(
        &["experts", "--prompt-file", p, "--simulate-cache", "25%,4K"],
        dir.path(),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "distinct",
        "top-5",
        "entropy",
        "lru",
        "lfu",
        "per-layer lru",
        "belady",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prompt = dir.path().join("p.txt");
    std::fs::write(&prompt, "Hello\n").expect("prompt file");
    let p = prompt.to_str().expect("UTF-8");
    let fail = |args: &[&str], want: &str| {
        let out = frugal(args, dir.path());
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fail(
        &["experts", "--prompt-file", "/nonexistent/prompts.txt"],
        "/nonexistent/prompts.txt",
    );
    let dense = model_dir("llama");
    fail(
        &[
            "experts",
            "--model",
            dense.to_str().expect("UTF-8"),
            "--prompt-file",
            p,
        ],
        "no MoE layers",
    );
    fail(
        &["experts", "--prompt-file", p, "--simulate-cache", "lots"],
        "--simulate-cache",
    );
    fail(
        &["experts", "--prompt-file", p, "--simulate-cache", "250%"],
        "(0, 100]",
    );
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").expect("file");
    fail(
        &["experts", "--prompt-file", empty.to_str().expect("UTF-8")],
        "no prompts",
    );
    fail(&["experts", "--trace", p], "not a routing trace");
    fail(&["experts"], "--prompt-file");
}

#[test]
fn quantized_expert_bytes_follow_the_block_size() {
    // Q8_0 stores 32 weights in 34 bytes (an f16 scale and 32 int8s; ggml's block_q8_0), so
    // the experts of a model quantized on load weigh elements / 32 · 34 bytes.
    let dir = tempfile::tempdir().expect("temp dir");
    let prompt = dir.path().join("p.txt");
    std::fs::write(&prompt, "Hello world\n").expect("prompt file");
    let model = model_dir("deepseek-v3");
    let st_bytes = std::fs::read(model.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&st_bytes).expect("safetensors");
    let elements: u64 = st
        .tensors()
        .iter()
        .filter(|(n, _)| n.contains(".experts."))
        .map(|(_, t)| t.shape().iter().product::<usize>() as u64)
        .sum();
    let got = ok_json(&frugal(
        &[
            "experts",
            "--model",
            model.to_str().expect("UTF-8"),
            "--prompt-file",
            prompt.to_str().expect("UTF-8"),
            "--quant",
            "q8_0",
            "--json",
        ],
        dir.path(),
    ));
    assert_eq!(got["total_expert_bytes"], elements / 32 * 34);
}

/// The percentage in the first line of `section` (after `after`) that starts with `policy`.
fn hit_rate(text: &str, after: &str, policy: &str) -> String {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {text}"));
    let line = text[from..]
        .lines()
        .find(|l| l.trim_start().starts_with(policy))
        .unwrap_or_else(|| panic!("no {policy} line in {text}"));
    line.split_whitespace()
        .find(|w| w.ends_with('%'))
        .unwrap_or_else(|| panic!("no rate in {line}"))
        .to_owned()
}

/// The real expert cache driven by a recorded trace (`--replay-model`, reads from the GGUF)
/// hits exactly as often as the simulation of a cache of as many experts (independent code:
/// `residency::policy`), for LRU and per-layer LRU. (LFU may differ: the cache pins a
/// request's own experts, the simulation may evict one it has just used.) The trace is the
/// model's own routing, recorded by `experts --save-trace`.
#[test]
fn replay_through_the_real_cache_equals_the_simulation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = "deepseek-v3";
    let r = reference(name);
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, r["messages"][0]["content"].as_str().expect("text")).expect("prompt");
    let gguf = frugal_testdata::fixtures_dir()
        .join("gguf")
        .join(name)
        .join(format!("{name}-F32.gguf"));
    let gguf = gguf.to_str().expect("UTF-8");
    let trace = dir.path().join("trace.json");
    let trace = trace.to_str().expect("UTF-8");
    let out = frugal(
        &[
            "experts",
            "--model",
            gguf,
            "--prompt-file",
            prompt.to_str().expect("UTF-8"),
            "--max-tokens",
            "8",
            "--save-trace",
            trace,
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = frugal(
        &[
            "experts",
            "--trace",
            trace,
            "--replay-model",
            gguf,
            "--expert-cache",
            "1",
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&probe.stdout).into_owned();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let slot: u64 = text
        .split("slots of ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no slot size in {text}"));
    // Per-layer shares of at least k = 4: with less, a request of k experts cannot keep them
    // all, and the cache (which pins them) and the simulation (which evicts its own) differ.
    for slots in [8u64, 12] {
        let out = frugal(
            &[
                "experts",
                "--trace",
                trace,
                "--simulate-cache",
                &slots.to_string(),
                "--replay-model",
                gguf,
                "--expert-cache",
                &(slots * slot).to_string(),
            ],
            dir.path(),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&format!("({slots} slots of")), "{text}");
        for policy in ["lru", "per-layer lru"] {
            let sim = hit_rate(&text, "cache simulation", policy);
            let real = hit_rate(&text, "replay of", policy);
            assert_eq!(sim, real, "{policy} with {slots} slots: {text}");
        }
        assert_ne!(hit_rate(&text, "replay of", "lru"), "0.0%", "{text}");
    }
}
