//! The Qwen2, Llama, Qwen3-MoE and Mixtral forward passes (one decoder, the families' blocks)
//! against transformers' outputs on the fixture models (`fixtures/models/{qwen2,llama,qwen3-moe,
//! mixtral}`, made by `fixtures/models/make_models.py`): logits of every position in one pass
//! and through the cache in chunks of 1 (vs transformers' own stepwise logits) and 3, hidden
//! states after every layer, the routed experts of the MoE ones, and the greedy continuation.

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{ModelFiles, TensorSource};
use frugal_model::{KvCache, Model, ModelError};

mod support;
use support::*;

/// The fixtures' logits have std ≈ 3; transformers' own one-pass vs stepwise difference is up
/// to ~6e-6 here (`checks.stepwise_max_abs_diff`), so 1e-4 leaves room for a different
/// summation order only.
const F32_TOL: f32 = 1e-4;

/// q/k/v bias, GQA 4/2, sharded safetensors.
#[test]
fn qwen2_matches_transformers() {
    check_fixture("qwen2", F32_TOL);
}

/// Tied LM head (no `lm_head.weight` in the file) and a sliding window of 8 on layer 1, with
/// the greedy continuation running past the window through the cache.
#[test]
fn qwen2_tied_sliding_window_matches_transformers() {
    check_fixture("qwen2-tied-swa", F32_TOL);
}

/// GQA, llama3 rope scaling (all three frequency bands).
#[test]
fn llama_matches_transformers() {
    check_fixture("llama", F32_TOL);
}

/// q/k norm, head_dim 32 ≠ hidden / heads, 16 experts top-4 renormalised.
#[test]
fn qwen3_moe_matches_transformers() {
    check_fixture("qwen3-moe", F32_TOL);
}

/// 8 experts top-2, softmax over all then renormalised, `w1`/`w3`/`w2` names.
#[test]
fn mixtral_matches_transformers() {
    check_fixture("mixtral", F32_TOL);
}

/// Sliding-window attention: the qwen2 weights with `use_sliding_window` (window 3, layer 0
/// full, layer 1 windowed: `max_window_layers` 1), the mixtral weights with window 3 on every
/// layer and the qwen3-moe weights with window 3 and `max_window_layers` 1 (which Qwen3-MoE
/// ignores: every layer windowed), against transformers on the same configs (`fixtures/models/make_sliding.py`; the
/// window changes its logits by 6-11, so ignoring it fails). One pass, and through the cache in
/// chunks of 1 and 3 (positions past the window are skipped, not evicted).
#[test]
fn sliding_window_matches_transformers() {
    let st = SafetensorsFile::open(fixture("sliding").join("reference.safetensors"))
        .expect("sliding/reference.safetensors");
    for name in ["qwen2", "mixtral", "qwen3-moe"] {
        let text = std::fs::read_to_string(fixture("sliding").join(format!("{name}.config.json")))
            .unwrap();
        let config = frugal_formats::config::ModelConfig::from_hf_json(
            &serde_json::from_str(&text).unwrap(),
        )
        .unwrap();
        let frugal_formats::config::Attention::Gqa(g) = &config.attention else {
            panic!("{name} is GQA");
        };
        let w = g.sliding_window.as_ref().expect("window configured");
        assert_eq!(w.size, 3);
        let files = ModelFiles::open(fixture(name).to_str().unwrap()).unwrap();
        let model = Model::from_parts(config.clone(), files.tensors().unwrap()).unwrap();
        let prompt = Reference::open(name).ids("prompt_ids");
        let t = st.tensor(&format!("{name}_logits")).unwrap();
        let want: Vec<f32> = t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for chunk in [prompt.len(), 1, 3] {
            let d = max_abs_diff(&chunked(&model, &prompt, chunk), &want);
            eprintln!("sliding {name}: chunk {chunk} max|Δlogits| {d:.3e}");
            assert!(d <= F32_TOL, "sliding {name}: chunk {chunk} differs by {d}");
        }
    }
}

/// A cache made for another kind of attention is an error, not a panic, both ways.
#[test]
fn cache_of_another_model_is_refused() {
    let qwen_files = ModelFiles::open(fixture("qwen2").to_str().unwrap()).unwrap();
    let qwen = Model::load(&qwen_files).unwrap();
    let ds_files = ModelFiles::open(fixture("deepseek-v3").to_str().unwrap()).unwrap();
    let ds = Model::load(&ds_files).unwrap();
    let llama_files = ModelFiles::open(fixture("llama").to_str().unwrap()).unwrap();
    let llama = Model::load(&llama_files).unwrap();
    for (model, other) in [(&qwen, &ds), (&ds, &qwen), (&qwen, &llama)] {
        let mut cache = KvCache::new(other);
        let err = model.forward(&[1], 0, &mut cache);
        if std::ptr::eq(model, &qwen) && std::ptr::eq(other, &llama) {
            // Same shape (2 layers, 2 kv heads of 16): a Llama cache fits a Qwen2 model.
            assert!(err.is_ok());
        } else {
            let err = err.unwrap_err();
            assert!(matches!(err, ModelError::CacheMismatch { .. }), "{err}");
        }
    }
}

#[test]
fn missing_bias_and_norm_are_named() {
    struct Without<'a>(&'a dyn TensorSource, &'static str);
    impl TensorSource for Without<'_> {
        fn tensor_infos(&self) -> Vec<frugal_formats::TensorInfo> {
            self.0.tensor_infos()
        }
        fn tensor(&self, name: &str) -> Option<frugal_formats::TensorView<'_>> {
            (name != self.1).then(|| self.0.tensor(name)).flatten()
        }
    }
    for (fixture_name, name) in [
        ("qwen2", "model.layers.1.self_attn.k_proj.bias"),
        ("qwen3-moe", "model.layers.0.self_attn.q_norm.weight"),
        (
            "mixtral",
            "model.layers.1.block_sparse_moe.experts.7.w3.weight",
        ),
        ("llama", "lm_head.weight"),
    ] {
        let files = ModelFiles::open(fixture(fixture_name).to_str().unwrap()).unwrap();
        let src = Without(files.tensors().unwrap(), name);
        let err = Model::from_parts(files.config().unwrap(), &src).unwrap_err();
        assert!(
            matches!(&err, ModelError::MissingTensor { name: n } if n == name),
            "{fixture_name}: {err}"
        );
    }
}

/// Threads split matrix rows and attention heads; each value is computed the same way whatever
/// the split, so the logits are bit-identical (prompt repeated to pass the parallel threshold).
#[test]
fn more_threads_same_logits() {
    for name in ["qwen3-moe", "qwen2"] {
        let files = ModelFiles::open(fixture(name).to_str().unwrap()).unwrap();
        let mut model = Model::load(&files).unwrap();
        let prompt = Reference::open(name).ids("prompt_ids").repeat(8);
        model.set_threads(1);
        let one = chunked(&model, &prompt, prompt.len());
        for threads in [2, 3] {
            model.set_threads(threads);
            assert_eq!(
                one,
                chunked(&model, &prompt, prompt.len()),
                "{name}: {threads}"
            );
        }
    }
}
