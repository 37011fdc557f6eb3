//! `frugal quantize` and `--quant` end to end.
//!
//! - `frugal quantize <name>-F32.gguf out.gguf --type q4_k_m` writes llama.cpp's own Q4_K_M file
//!   (`fixtures/gguf/`, made by `llama_model_quantize`) byte for byte, also from the two-shard
//!   split of the same model, and prints the type histogram and size.
//! - `frugal logits --quant q8_0` on a safetensors fixture gives the logits of the model with
//!   llama.cpp's Q8_0 weights (`logits_dequantized_weights`, f32 activations) within 1e-4.
//! - Bad input: an unknown type lists the valid ones; a quantized input names the tensor; an
//!   unwritable output and a Hugging Face folder are clear errors; `--quant` on a GGUF is refused.

use std::process::Command;

fn frugal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .output()
        .expect("runs")
}

fn fixture(p: &str) -> String {
    frugal_testdata::fixtures_dir()
        .join(p)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn quantize_writes_llama_cpps_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("llama-q4km.gguf");
    let o = frugal(&[
        "quantize",
        &fixture("gguf/llama/llama-F32.gguf"),
        out.to_str().unwrap(),
        "--type",
        "q4_k_m",
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        std::fs::read(&out).unwrap()
            == std::fs::read(fixture("gguf/llama/llama-Q4_K_M.gguf")).unwrap()
    );
    // llama.cpp's JSON: F32 6, Q5_0 13, Q8_0 3.
    assert!(
        stdout.contains("tensor types: F32 6, Q5_0 13, Q8_0 3"),
        "{stdout}"
    );
    assert!(stdout.contains("15 tensor(s) fell back"), "{stdout}");
    // The same model as two shards (first shard given): the same file, split keys dropped.
    let out2 = dir.path().join("split-q4km.gguf");
    let o = frugal(&[
        "quantize",
        &fixture("gguf/split/llama-F32-00001-of-00002.gguf"),
        out2.to_str().unwrap(),
        "--type",
        "Q4_K_M",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out2).unwrap() == std::fs::read(&out).unwrap());
}

#[test]
fn bad_quantize_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let out = out.to_str().unwrap();
    let f32 = fixture("gguf/qwen2/qwen2-F32.gguf");
    let err = |o: std::process::Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = err(frugal(&["quantize", &f32, out, "--type", "q4_k_x"]));
    assert!(
        e.contains("\"q4_k_x\" is not a quantization type; valid types: F32, F16, BF16, Q4_0"),
        "{e}"
    );
    let e = err(frugal(&[
        "quantize",
        &fixture("gguf/qwen2/qwen2-Q8_0.gguf"),
        out,
        "--type",
        "q4_k_m",
    ]));
    assert!(
        e.contains("tensor 'token_embd.weight' is Q8_0: only F32, F16 and BF16"),
        "{e}"
    );
    assert!(
        !std::path::Path::new(out).exists(),
        "a failed run leaves no file"
    );
    let e = err(frugal(&[
        "quantize",
        &f32,
        "/nonexistent-dir/o.gguf",
        "--type",
        "q8_0",
    ]));
    assert!(
        e.contains("cannot write the output /nonexistent-dir/o.gguf"),
        "{e}"
    );
    let e = err(frugal(&[
        "quantize",
        &fixture("models/qwen2"),
        out,
        "--type",
        "q8_0",
    ]));
    assert!(e.contains("give a GGUF file"), "{e}");
    let e = err(frugal(&[
        "logits", "--model", &f32, "--tokens", "1,2", "--quant", "q8_0",
    ]));
    assert!(e.contains("--quant applies to safetensors models"), "{e}");
    let e = err(frugal(&[
        "logits",
        "--model",
        &fixture("models/qwen2"),
        "--tokens",
        "1,2",
        "--quant",
        "q7",
    ]));
    assert!(e.contains("valid types: Q8_0, Q6_K"), "{e}");
}

/// `frugal logits --quant q8_0` on the qwen2 safetensors fixture: its Q8_0 matrices are
/// llama.cpp's bytes, so with 8-bit activations (the default) the logits are llama.cpp's own
/// for its Q8_0 file (`logits`), and with `FRUGAL_EXACT_ACTIVATIONS=1` they are llama.cpp's on
/// the dequantized weights with f32 activations (`logits_dequantized_weights`). Both to 1e-4;
/// observed ~1e-6 and ~5e-6 (f32 summation order).
#[test]
fn logits_with_quant_q8_0_match_llama_cpps_q8_0_weights() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("gguf/qwen2/qwen2-Q8_0.json")).unwrap(),
    )
    .unwrap();
    let toks: Vec<String> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let st = std::fs::read(fixture("gguf/qwen2/qwen2-Q8_0.logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    for (exact, reference) in [("0", "logits"), ("1", "logits_dequantized_weights")] {
        let o = Command::new(env!("CARGO_BIN_EXE_frugal"))
            .args([
                "logits",
                "--model",
                &fixture("models/qwen2"),
                "--tokens",
                &toks.join(","),
                "--quant",
                "q8_0",
            ])
            .env("FRUGAL_EXACT_ACTIVATIONS", exact)
            .output()
            .expect("runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let ours: Vec<f32> = v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let want: Vec<f32> = st
            .tensor(reference)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(ours.len(), want.len());
        let d = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-4, "{reference}: max |diff| {d}");
    }
}

/// A quantized input is refused, pointing at `--allow-requantize`; with it, the Q8_0 file is
/// requantized to Q2_K (with the warning that quality is lost), and the result runs.
#[test]
fn allow_requantize_requantizes_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q2k.gguf");
    let input = fixture("gguf/qwen3-moe/qwen3-moe-Q8_0.gguf");
    let args = ["quantize", &input, out.to_str().unwrap(), "--type", "q2_k"];
    let o = frugal(&args);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--allow-requantize"), "{stderr}");
    let o = frugal(&[&args[..], &["--allow-requantize"]].concat());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("loses more quality"), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Q2_K"), "{stdout}");
    let o = frugal(&[
        "logits",
        "--model",
        out.to_str().unwrap(),
        "--tokens",
        "1,2,3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
