//! `frugal bench`: the report's structure and its byte counts (no timing is asserted: speeds
//! are only checked to be measured, i.e. positive and finite).

use std::process::Command;

use serde_json::Value;

fn frugal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .expect("running frugal")
}

/// `frugal ARGS`, which must succeed and print one JSON object.
fn json(args: &[&str]) -> Value {
    let out = frugal(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn reports_both_tests_and_active_bytes() {
    // llama.cpp's own conversion of the DeepSeek-V2-Lite fixture: vocab 512, hidden 32,
    // 27 layers (1 dense), 8 routed experts of FFN 16 with 3 used, all F32.
    let path =
        frugal_testdata::fixtures_dir().join("gguf/deepseek-v2-lite/deepseek-v2-lite-F32.gguf");
    let r = json(&[
        "bench",
        "--model",
        path.to_str().unwrap(),
        "-p",
        "3",
        "-n",
        "2",
        "-r",
        "2",
        "--threads",
        "2",
        "--bandwidth",
        "10",
        "--json",
    ]);
    let tests = r["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp3", "tg2"]);
    for t in tests {
        let samples: Vec<f64> = t["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.is_finite() && *s > 0.0));
        let mean = samples.iter().sum::<f64>() / 2.0;
        assert!((t["mean"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean);
    }
    // Bytes by hand from the fixture's shapes (f32): one embedding row; the whole LM head;
    // 26 MoE layers × 3 stacked expert tensors of 8 × 16 × 32, of which 3/8 are read.
    let a = &r["active"];
    assert_eq!(a["embedding_row"], 32 * 4);
    assert_eq!(a["lm_head"], 512 * 32 * 4);
    assert_eq!(a["routed_experts"], 26 * 3 * (8 * 16 * 32 * 4) * 3 / 8);
    let per_token = a["per_token"].as_u64().unwrap();
    assert_eq!(
        per_token,
        ["embedding_row", "lm_head", "routed_experts", "dense"]
            .iter()
            .map(|k| a[k].as_u64().unwrap())
            .sum::<u64>()
    );
    let tg = tests[1]["mean"].as_f64().unwrap();
    let gbs = r["tg_weight_gbs"].as_f64().unwrap();
    assert!((gbs - tg * per_token as f64 / 1e9).abs() <= 1e-9 * gbs);
    assert_eq!(r["memory_read_gbs"], 10.0);
    assert!((r["bandwidth_fraction"].as_f64().unwrap() - gbs / 10.0).abs() <= 1e-12);
}

#[test]
fn profile_counts_each_step_of_a_decoded_token() {
    // The V2-Lite fixture (27 layers, the first dense): each decoded token runs, per layer,
    // one attention projection step, one attention over the cache and one output projection,
    // and per MoE layer one router; one embedding and one LM head per token.
    let path =
        frugal_testdata::fixtures_dir().join("gguf/deepseek-v2-lite/deepseek-v2-lite-F32.gguf");
    let r = json(&[
        "bench",
        "--model",
        path.to_str().unwrap(),
        "-p",
        "4",
        "-n",
        "3",
        "-r",
        "2",
        "--threads",
        "2",
        "--bandwidth",
        "10",
        "--profile",
        "--json",
    ]);
    let tests = r["tests"].as_array().unwrap();
    for t in tests {
        let phases = t["profile"].as_array().expect("a profile per test");
        let by_name = |name: &str| {
            phases
                .iter()
                .find(|p| p["phase"] == name)
                .unwrap_or_else(|| panic!("{} has no {name}", t["test"]))
        };
        // Steps per token: a pp test runs each step once for all its tokens.
        let per = if t["test"] == "tg3" { 1.0 } else { 0.25 };
        for (name, steps) in [
            ("embed", 1.0),
            ("attn.proj", 27.0),
            ("attn.core", 27.0),
            ("attn.out", 27.0),
            ("router", 26.0),
            ("ffn.gate_up", 27.0),
            ("ffn.down", 27.0),
            ("lm_head", 1.0),
        ] {
            let p = by_name(name);
            assert_eq!(
                p["calls_per_token"].as_f64().unwrap(),
                steps * per,
                "{name}"
            );
            assert!(p["us_per_token"].as_f64().unwrap() > 0.0, "{name}");
        }
        // The phases and `other` split the test's time.
        let sum: f64 = phases.iter().map(|p| p["fraction"].as_f64().unwrap()).sum();
        assert!(
            (1.0 - 1e-6..1.05).contains(&sum),
            "phases add up to {sum} of the test's time"
        );
    }
    // Without --profile there is none.
    let r = json(&[
        "bench",
        "--model",
        path.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "1",
        "-r",
        "1",
        "--bandwidth",
        "10",
        "--json",
    ]);
    assert!(r["tests"][0].get("profile").is_none());
}

#[test]
fn depth_prefills_before_each_test_and_stays_out_of_the_profile() {
    let path =
        frugal_testdata::fixtures_dir().join("gguf/deepseek-v2-lite/deepseek-v2-lite-F32.gguf");
    let r = json(&[
        "bench",
        "--model",
        path.to_str().unwrap(),
        "-p",
        "2",
        "-n",
        "2",
        "-d",
        "5",
        "-r",
        "1",
        "--bandwidth",
        "10",
        "--profile",
        "--json",
    ]);
    let tests = r["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp2 @ d5", "tg2 @ d5"]);
    // The untimed prefill of 5 tokens is one more attention step per layer: had it been
    // profiled, the tg test would count 27 × 3 steps over its 2 tokens, not 27 per token.
    let core = tests[1]["profile"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "attn.core")
        .expect("attn.core")
        .clone();
    assert_eq!(core["calls_per_token"], 27.0);

    // Past the model's positions: named, not a panic.
    let out = frugal(&[
        "bench",
        "--model",
        path.to_str().unwrap(),
        "-d",
        "100000000",
        "-n",
        "1",
        "-p",
        "0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-d 100000000") && err.contains("positions"),
        "{err}"
    );
}

#[test]
fn each_repetition_is_set_against_the_bandwidth_measured_around_it() {
    let path =
        frugal_testdata::fixtures_dir().join("gguf/deepseek-v2-lite/deepseek-v2-lite-F32.gguf");
    let r = json(&[
        "bench",
        "--model",
        path.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "2",
        "-r",
        "3",
        "--memory-mib",
        "8",
        "--json",
    ]);
    let floats = |key: &str| -> Vec<f64> {
        r[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: a bandwidth per repetition"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (before, after) = (floats("memory_read_before"), floats("memory_read_samples"));
    assert_eq!((before.len(), after.len()), (3, 3));
    assert!(before
        .iter()
        .chain(&after)
        .all(|b| b.is_finite() && *b > 0.0));
    let per_token = r["active"]["per_token"].as_f64().unwrap() / 1e9;
    let tps: Vec<f64> = r["tests"][0]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Each repetition against the mean of the two; the steady ones (within 10%) counted.
    let reps: Vec<(f64, f64, bool)> = (0..3)
        .map(|i| {
            let bw = (before[i] + after[i]) / 2.0;
            let steady = before[i].min(after[i]) >= 0.9 * before[i].max(after[i]);
            (bw, tps[i] * per_token / bw, steady)
        })
        .collect();
    let steady = reps.iter().filter(|r| r.2).count();
    assert_eq!(r["steady_repetitions"], steady as u64);
    let counted: Vec<_> = reps.iter().filter(|r| r.2 || steady == 0).collect();
    let n = counted.len() as f64;
    let close = |got: &serde_json::Value, want: f64, what: &str| {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{what}: {got} vs {want}");
    };
    close(
        &r["memory_read_gbs"],
        counted.iter().map(|c| c.0).sum::<f64>() / n,
        "bandwidth",
    );
    close(
        &r["bandwidth_fraction"],
        counted.iter().map(|c| c.1).sum::<f64>() / n,
        "fraction",
    );
    close(
        &r["bandwidth_fraction_all"],
        reps.iter().map(|c| c.1).sum::<f64>() / 3.0,
        "fraction over all",
    );
}

#[test]
fn memory_test_reports_each_thread_count() {
    let r = json(&[
        "bench",
        "--memory",
        "--threads",
        "2",
        "--memory-mib",
        "8",
        "-r",
        "2",
        "--json",
    ]);
    assert_eq!(r["bytes"], 8 << 20);
    let read = r["read"].as_array().unwrap();
    let threads: Vec<u64> = read
        .iter()
        .map(|b| b["threads"].as_u64().unwrap())
        .collect();
    assert_eq!(threads, [1, 2]);
    for b in read {
        let best = b["best_gbs"].as_f64().unwrap();
        assert!(best.is_finite() && best > 0.0 && best >= b["mean_gbs"].as_f64().unwrap());
    }
}

#[test]
fn bad_arguments_are_named() {
    for (args, expect) in [
        (
            &["bench", "--threads", "0"][..],
            "--threads must be at least 1",
        ),
        (
            &["bench", "-r", "0"][..],
            "--repetitions must be at least 1",
        ),
        (&["bench", "-p", "0", "-n", "0"][..], "nothing to measure"),
        (
            &["bench", "--bandwidth=-1"][..],
            "--bandwidth must be a positive",
        ),
        (
            &["bench", "--model", "/nonexistent/model.gguf"][..],
            "/nonexistent/model.gguf",
        ),
    ] {
        let out = frugal(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
