//! `frugal inspect` on the reference config folders: the JSON counts against transformers'
//! (`fixtures/params/params_reference.json`), and clean one-line failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use frugal_testdata::reference_dir;

fn frugal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .expect("running frugal")
}

fn inspect_json(dir: &Path) -> Value {
    let out = frugal(&["inspect", dir.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

fn transformers_counts() -> Value {
    let path = frugal_testdata::fixtures_dir().join("params/params_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("params_reference.json")).unwrap()
}

#[test]
fn counts_for_the_reference_folders() {
    let reference = transformers_counts();
    // (folder, experts chosen of routed, KV bytes per token at 16 bits)
    let cases = [
        ("deepseek-ai__DeepSeek-R1", 8, 256, 61 * (512 + 64) * 2),
        ("deepseek-ai__DeepSeek-V2-Lite", 6, 64, 27 * (512 + 64) * 2),
        ("Qwen__Qwen3-30B-A3B", 8, 128, 48 * 2 * 4 * 128 * 2),
        ("mistralai__Mixtral-8x7B-v0.1", 2, 8, 32 * 2 * 8 * 128 * 2),
    ];
    for (name, k, n, kv) in cases {
        let j = inspect_json(&reference_dir().join("configs").join(name));
        let r = &reference["models"][name];
        let total = r["params_total"].as_u64().unwrap();
        let routed = r["params_routed_experts"].as_u64().unwrap();
        assert_eq!(j["params_total"].as_u64(), Some(total), "{name}");
        assert_eq!(
            j["params_active"].as_u64(),
            Some(total - routed + routed / n * k),
            "{name}"
        );
        assert_eq!(j["kv_cache_bytes_per_token"].as_u64(), Some(kv), "{name}");
        assert_eq!(
            j["kv_cache_bytes_per_1k_tokens"].as_u64(),
            Some(kv * 1000),
            "{name}"
        );
        assert_eq!(j["experts"]["routed"].as_u64(), Some(n), "{name}");
    }
    let r1 = inspect_json(&reference_dir().join("configs/deepseek-ai__DeepSeek-R1"));
    assert_eq!(r1["architecture"], "DeepseekV3ForCausalLM");
    assert_eq!(
        (r1["dense_layers"].as_u64(), r1["moe_layers"].as_u64()),
        (Some(3), Some(58))
    );
    assert_eq!(r1["attention"]["kind"], "mla");
    assert!(r1["params_mtp"].as_u64().unwrap() > 13_000_000_000);
    assert!(r1["kv_cache_layout"].as_str().unwrap().contains("latent"));
    assert!(r1["chat_template"]
        .as_str()
        .unwrap()
        .contains("chat_template.jinja"));
    let v3 = inspect_json(&reference_dir().join("configs/deepseek-ai__DeepSeek-V3"));
    assert!(v3["chat_template"]
        .as_str()
        .unwrap()
        .contains("tokenizer_config.json"));
    let mixtral = inspect_json(&reference_dir().join("configs/mistralai__Mixtral-8x7B-v0.1"));
    assert_eq!(mixtral["architecture"], "MixtralForCausalLM");
    assert!(mixtral["chat_template"].is_null() && mixtral["tokenizer"].is_null());
}

#[test]
fn text_report_mentions_the_structure() {
    let out = frugal(&[
        "inspect",
        reference_dir()
            .join("configs/deepseek-ai__DeepSeek-R1")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "DeepseekV3ForCausalLM",
        "61 (3 dense, 58 MoE) + 1 MTP",
        "671.0B total",
        "MLA latent",
        "yarn x40",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

/// Runs inspect on `dir`, expects failure with one line of stderr containing every needle.
fn fails_with(dir: &Path, needles: &[&str]) {
    let out = frugal(&["inspect", dir.to_str().unwrap(), "--json"]);
    assert!(!out.status.success(), "{} should fail", dir.display());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

#[test]
fn bad_folders_fail_with_one_line() {
    let r1: Value = serde_json::from_str(
        &std::fs::read_to_string(
            reference_dir().join("configs/deepseek-ai__DeepSeek-R1/config.json"),
        )
        .unwrap(),
    )
    .unwrap();

    let unknown = tempfile::tempdir().unwrap();
    let mut j = r1.clone();
    j["architectures"] = serde_json::json!(["FooForCausalLM"]);
    j["model_type"] = Value::from("foo");
    std::fs::write(unknown.path().join("config.json"), j.to_string()).unwrap();
    fails_with(
        unknown.path(),
        &[
            "unsupported architecture",
            "FooForCausalLM",
            "DeepseekV3ForCausalLM",
        ],
    );

    let missing = tempfile::tempdir().unwrap();
    let mut j = r1.clone();
    j.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(missing.path().join("config.json"), j.to_string()).unwrap();
    fails_with(
        missing.path(),
        &["missing required key", "hidden_size", "config.json"],
    );

    fails_with(
        &reference_dir().join("configs/deepseek-ai__DeepSeek-V3.2"),
        &["DeepseekV32ForCausalLM"],
    );

    let empty = tempfile::tempdir().unwrap();
    fails_with(empty.path(), &["no config.json"]);
    fails_with(&empty.path().join("nope"), &["does not exist"]);

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("config.json"), "{\"hidden_size\": ").unwrap();
    fails_with(broken.path(), &["config.json", "invalid JSON"]);
}

fn fixtures() -> PathBuf {
    frugal_testdata::fixtures_dir()
}

/// On the fixture models saved by transformers (f32), the elements actually on disk must equal
/// the parameter count planned from config.json alone.
#[test]
fn planned_counts_equal_the_tensors_transformers_saved() {
    for name in [
        "deepseek-v3",
        "deepseek-v2",
        "deepseek-v2-lite",
        "qwen2",
        "qwen2-tied-swa",
        "llama",
        "qwen3-moe",
        "mixtral",
    ] {
        let r = inspect_json(&fixtures().join("models").join(name));
        let by_dtype = r["tensors_by_dtype"]
            .as_array()
            .expect("tensors are listed");
        assert_eq!(by_dtype.len(), 1, "{name}: all f32");
        assert_eq!(by_dtype[0]["dtype"], "F32");
        let on_disk = by_dtype[0]["bytes"].as_u64().expect("bytes") / 4;
        let planned =
            r["params_total"].as_u64().expect("total") + r["params_mtp"].as_u64().expect("mtp");
        assert_eq!(on_disk, planned, "{name}");
    }
}

/// A GGUF written by llama.cpp describes the same model as the folder it was converted from,
/// and its tensor types are those llama.cpp's quantizer chose (recorded by gguf-py).
#[test]
fn gguf_reports_like_its_source_folder() {
    let folder = inspect_json(&fixtures().join("models/deepseek-v3"));
    let gguf = inspect_json(&fixtures().join("gguf/deepseek-v3/deepseek-v3-F32.gguf"));
    for key in [
        "architecture",
        "layers",
        "params_total",
        "params_active",
        "kv_cache_bytes_per_token",
    ] {
        assert_eq!(gguf[key], folder[key], "{key}");
    }
    assert!(gguf["tokenizer"]
        .as_str()
        .expect("tokenizer")
        .contains("deepseek-v3"));
    assert!(gguf["chat_template"]
        .as_str()
        .expect("template")
        .contains("GGUF"));

    let q4 = inspect_json(&fixtures().join("gguf/deepseek-v3-wide/deepseek-v3-wide-Q4_K_M.gguf"));
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures().join("gguf/deepseek-v3-wide/deepseek-v3-wide-Q4_K_M.json"),
        )
        .expect("fixture JSON"),
    )
    .expect("JSON");
    let want = json["tensor_type_counts"]
        .as_object()
        .expect("tensor_type_counts");
    let got = q4["tensors_by_dtype"].as_array().expect("tensors listed");
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for t in got {
        let name = t["dtype"].as_str().expect("dtype");
        assert_eq!(t["count"], want[name], "{name}");
    }
}
