//! Quantize on load (`QuantizedWeights`) against llama.cpp.
//!
//! - Bytes: quantizing the Hugging Face fixtures' matrices to Q8_0 gives, tensor by tensor,
//!   exactly the Q8_0 tensors of llama.cpp's own `<name>-Q8_0.gguf` (converted from the same
//!   weights, then `llama_model_quantize`); stacked GGUF experts are compared expert by expert.
//!   `--quant q4_k` on rows of 64 falls back to Q5_0 as llama.cpp does, with its bytes.
//!   Not comparable, and skipped: DeepSeek's `kv_b_proj` (llama.cpp stores it split and
//!   transposed as `attn_k_b`/`attn_v_b`, so its Q8_0 blocks run along other rows).
//! - Logits: qwen2 run with `--quant Q8_0` weights (f32 activations) against llama.cpp's
//!   `logits_dequantized_weights` of its Q8_0 file (the same weights dequantized, f32
//!   activations): within 1e-4, the tolerance of the GGUF logits tests.
//! - FP8 (deepseek-v3-fp8): decoded with its block scales, then quantized: every Q8_0 value is
//!   the FP8 weight to within its block's half step; the model runs on them.

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{DType, ModelFiles, TensorSource};
use frugal_kernels::quant::QuantType;
use frugal_model::quantized_weights::QuantizedWeights;
use frugal_model::{KvCache, LoadOptions, Model};
use frugal_testdata::max_abs_diff;

/// The GGUF name (and expert index) llama.cpp gives an HF matrix; `None`: not comparable.
fn gguf_name(hf: &str) -> Option<(String, Option<usize>)> {
    match hf {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), None)),
        "lm_head.weight" => return Some(("output.weight".into(), None)),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (expert, rest) = match rest.strip_prefix("mlp.experts.") {
        Some(r) => {
            let (e, r) = r.split_once('.')?;
            (Some(e.parse().ok()?), format!("mlp.experts.{r}"))
        }
        None => (None, rest.to_owned()),
    };
    let g = match rest.as_str() {
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_a_proj.weight" => "attn_q_a",
        "self_attn.q_b_proj.weight" => "attn_q_b",
        "self_attn.kv_a_proj_with_mqa.weight" => "attn_kv_a_mqa",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        "mlp.shared_experts.gate_proj.weight" => "ffn_gate_shexp",
        "mlp.shared_experts.up_proj.weight" => "ffn_up_shexp",
        "mlp.shared_experts.down_proj.weight" => "ffn_down_shexp",
        "mlp.experts.gate_proj.weight" => "ffn_gate_exps",
        "mlp.experts.up_proj.weight" => "ffn_up_exps",
        "mlp.experts.down_proj.weight" => "ffn_down_exps",
        _ => return None,
    };
    Some((format!("blk.{layer}.{g}.weight"), expert))
}

fn open(name: &str) -> ModelFiles {
    let p = frugal_testdata::fixtures_dir().join("models").join(name);
    ModelFiles::open(p.to_str().unwrap()).unwrap()
}

/// Quantizes the HF fixture `name` on load to `ty` and compares every comparable matrix with
/// llama.cpp's `<name>-<preset>.gguf` where both chose the same type; returns how many matched
/// (all compared must be identical).
fn same_bytes_as_llama_cpp(name: &str, ty: QuantType, preset: &str) -> usize {
    let files = open(name);
    let config = files.config().unwrap();
    let qw =
        QuantizedWeights::new(&config, files.tensors().unwrap(), ty, 2, &mut |_, _| {}).unwrap();
    let gguf_path =
        frugal_testdata::fixtures_dir().join(format!("gguf/{name}/{name}-{preset}.gguf"));
    let g = ModelFiles::open(gguf_path.to_str().unwrap()).unwrap();
    let g = g.tensors().unwrap();
    let mut n = 0;
    let mut names: Vec<_> = qw.quantized().map(|(k, t)| (k.to_owned(), t)).collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (hf, qty) in names {
        let Some((gname, expert)) = gguf_name(&hf) else {
            assert!(
                hf.ends_with("kv_b_proj.weight"),
                "{hf} has no GGUF counterpart here"
            );
            continue;
        };
        let ours = qw.tensor(&hf).unwrap();
        let theirs = g
            .tensor(&gname)
            .unwrap_or_else(|| panic!("{gname} in llama.cpp's file"));
        if theirs.dtype != qty {
            continue;
        }
        let len = ours.data.len();
        let want = match expert {
            Some(e) => &theirs.data[e * len..(e + 1) * len],
            None => theirs.data,
        };
        assert!(ours.data == want, "{hf} vs {gname}: {qty} bytes differ");
        n += 1;
    }
    n
}

#[test]
fn q8_0_matrices_equal_llama_cpps() {
    assert_eq!(
        same_bytes_as_llama_cpp("qwen2", QuantType::Q8_0, "Q8_0"),
        16
    );
    // 2 embeddings + 3 dense-FFN + 3×4 attention + 2×(3 shared + 16×3 experts).
    assert_eq!(
        same_bytes_as_llama_cpp("deepseek-v3", QuantType::Q8_0, "Q8_0"),
        2 + 3 + 12 + 2 * (3 + 48)
    );
}

#[test]
fn q4_k_falls_back_as_llama_cpp_does() {
    // 64-wide rows cannot be Q4_K: both fall back to Q5_0, with the same bytes. llama.cpp's
    // Q4_K_M has Q5_0 for 13 of qwen2's tensors (its Q6_K picks become Q8_0 instead).
    assert_eq!(
        same_bytes_as_llama_cpp("qwen2", QuantType::Q4K, "Q4_K_M"),
        13
    );
    let files = open("qwen2");
    let config = files.config().unwrap();
    for ty in [
        QuantType::Q4K,
        QuantType::Q6K,
        QuantType::IQ4XS,
        QuantType::Q2K,
        QuantType::Q5_1,
    ] {
        let qw = QuantizedWeights::new(&config, files.tensors().unwrap(), ty, 1, &mut |_, _| {})
            .unwrap();
        let want = match ty {
            QuantType::Q4K => DType::Q5_0,
            QuantType::Q6K => DType::Q8_0,
            QuantType::IQ4XS => DType::IQ4NL,
            QuantType::Q2K => DType::Q4_0,
            _ => DType::Q5_1,
        };
        assert!(qw.quantized().all(|(_, t)| t == want), "{ty}");
        let model = Model::from_parts(config.clone(), &qw).unwrap();
        let mut cache = KvCache::new(&model);
        let logits = model.forward(&[1, 2, 3], 0, &mut cache).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()), "{ty}");
    }
}

fn f32s(st: &SafetensorsFile, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn tokens(json_path: &std::path::Path) -> Vec<u32> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn run_quantized(name: &str, toks: &[u32], options: LoadOptions) -> Vec<f32> {
    let files = open(name);
    let config = files.config().unwrap();
    let qw = QuantizedWeights::new(
        &config,
        files.tensors().unwrap(),
        QuantType::Q8_0,
        2,
        &mut |_, _| {},
    )
    .unwrap();
    let model = Model::from_parts_with(config, &qw, options).unwrap();
    let mut cache = KvCache::new(&model);
    model.forward(toks, 0, &mut cache).unwrap()
}

/// The quantized matrices are llama.cpp's Q8_0 bytes, so: with 8-bit activations (the
/// default) the logits are llama.cpp's own for its Q8_0 file (`logits`); with exact
/// activations, llama.cpp's on the dequantized weights with f32 activations
/// (`logits_dequantized_weights`). Both to 1e-4 (f32 summation order; observed ~1e-6).
#[test]
fn qwen2_q8_0_logits_match_llama_cpp_on_the_same_weights() {
    let dir = frugal_testdata::fixtures_dir().join("gguf/qwen2");
    let toks = tokens(&dir.join("qwen2-Q8_0.json"));
    let st = SafetensorsFile::open(dir.join("qwen2-Q8_0.logits.safetensors")).unwrap();
    for (exact, reference) in [(false, "logits"), (true, "logits_dequantized_weights")] {
        let options = LoadOptions {
            exact_activations: exact,
            keep_experts_mapped: false,
        };
        let ours = run_quantized("qwen2", &toks, options);
        let d = max_abs_diff(&ours, &f32s(&st, reference));
        eprintln!("qwen2 --quant Q8_0 vs llama.cpp Q8_0 ({reference}): {d:.3e}");
        assert!(d <= 1e-4, "{reference}: {d}");
    }
}

#[test]
fn fp8_checkpoints_quantize_on_load() {
    // Every FP8 matrix becomes Q8_0 whose values are the FP8 weights (decoded with their block
    // scales) to within half a Q8_0 step of their block plus the f16 rounding of its scale.
    let files = open("deepseek-v3-fp8");
    let config = files.config().unwrap();
    let src = files.tensors().unwrap();
    let qw = QuantizedWeights::new(&config, src, QuantType::Q8_0, 2, &mut |_, _| {}).unwrap();
    let mut n_fp8 = 0;
    for info in src.tensor_infos() {
        if info.dtype != DType::F8E4M3 {
            continue;
        }
        n_fp8 += 1;
        let q = qw.tensor(&info.name).unwrap();
        assert_eq!(q.dtype, DType::Q8_0, "{}", info.name);
        let (rows, cols) = (info.shape[0], info.shape[1]);
        let scale = src.tensor(&format!("{}_scale_inv", info.name)).unwrap();
        let mut scales = vec![0f32; scale.data.len() / 4];
        frugal_kernels::convert::f32_bytes_to_f32(scale.data, &mut scales);
        let mut x = vec![0f32; rows * cols];
        let fp8 = src.tensor(&info.name).unwrap();
        frugal_kernels::convert::dequant_fp8_block_rows(
            fp8.data,
            &scales,
            cols,
            128,
            0..rows,
            &mut x,
        );
        let mut y = vec![0f32; rows * cols];
        frugal_kernels::quant::dequantize_row(QuantType::Q8_0, q.data, &mut y).unwrap();
        for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let tol = amax / 254.0 * 1.01 + amax * 2f32.powi(-11);
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= tol, "{}: {a} vs {b}", info.name);
            }
        }
    }
    assert!(n_fp8 > 0);
    // The model runs on them. (Its logits are not compared: on this random fixture Q8_0 alone
    // moves DeepSeek-V3's logits by up to 2.5 and flips routing, see fixtures/gguf/README.md.)
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            frugal_testdata::fixtures_dir().join("models/deepseek-v3-fp8/reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let toks: Vec<u32> = reference["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let model = Model::from_parts(config, &qw).unwrap();
    let mut cache = KvCache::new(&model);
    let logits = model.forward(&toks, 0, &mut cache).unwrap();
    assert_eq!(logits.len(), toks.len() * model.vocab_size());
    assert!(logits.iter().all(|v| v.is_finite()));
}
