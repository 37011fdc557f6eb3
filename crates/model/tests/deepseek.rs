//! DeepSeek forward pass against transformers' outputs on the fixture models
//! (`fixtures/models/deepseek-*`, made by `fixtures/models/make_models.py`): logits of every
//! position in one pass and through the cache in chunks, routed experts per layer, and the
//! greedy continuation.

use frugal_formats::{ModelFiles, TensorSource};
use frugal_model::{DeepSeek, KvCache, ModelError};

mod support;
use support::*;

const F32_TOL: f32 = 1e-4;

#[test]
fn deepseek_v3_matches_transformers() {
    check_fixture("deepseek-v3", F32_TOL);
}

#[test]
fn deepseek_v2_lite_matches_transformers() {
    check_fixture("deepseek-v2-lite", F32_TOL);
}

#[test]
fn deepseek_v2_matches_transformers() {
    check_fixture("deepseek-v2", F32_TOL);
}

/// bf16 weights decoded exactly to f32 (bf16 is the top half of an f32), and the reference is
/// transformers in f32 on those same values: only summation order differs, as for f32 weights.
#[test]
fn deepseek_v3_bf16_matches_transformers_on_bf16_values() {
    check_fixture("deepseek-v3-bf16", F32_TOL);
}

/// FP8 weights dequantised block by block; the reference is transformers in f32 on the same
/// dequantised values (bf16-rounded where the checkpoint is bf16), so the f32 tolerance holds.
#[test]
fn deepseek_v3_fp8_matches_transformers_on_dequantised_weights() {
    check_fixture("deepseek-v3-fp8", F32_TOL);
}

/// Threads split matrix rows and attention heads; every value is computed the same way
/// whatever the split, so the logits are bit-identical. The prompt is repeated so the
/// attention (heads × tokens × context) and the products pass the parallel threshold.
#[test]
fn more_threads_same_logits() {
    let files = ModelFiles::open(fixture("deepseek-v3").to_str().unwrap()).unwrap();
    let mut model = DeepSeek::load(&files).unwrap();
    let prompt = Reference::open("deepseek-v3").ids("prompt_ids").repeat(4);
    model.set_threads(1);
    let one = chunked(&model, &prompt, prompt.len());
    for threads in [2, 3, 4] {
        model.set_threads(threads);
        assert_eq!(
            one,
            chunked(&model, &prompt, prompt.len()),
            "{threads} threads"
        );
    }
}

#[test]
fn bad_input_is_an_error() {
    let files = ModelFiles::open(fixture("deepseek-v3").to_str().unwrap()).unwrap();
    let model = DeepSeek::load(&files).unwrap();
    let vocab = model.vocab_size() as u32;
    let mut cache = KvCache::new(&model);
    let err = model.forward(&[1, vocab, 2], 0, &mut cache).unwrap_err();
    assert!(
        matches!(err, ModelError::TokenOutOfRange { token, index: 1, .. } if token == vocab),
        "{err}"
    );
    let max = model.config().max_position_embeddings;
    let long = vec![1u32; max + 1];
    let err = model.forward(&long, 0, &mut cache).unwrap_err();
    assert!(matches!(err, ModelError::ContextTooLong { .. }), "{err}");
    assert!(err.to_string().contains("max_position_embeddings"));
    let err = model.forward(&[1], 5, &mut cache).unwrap_err();
    assert!(matches!(err, ModelError::CachePosition { .. }), "{err}");
    assert_eq!(cache.len(), 0, "failed calls leave the cache untouched");

    // A cache made for another DeepSeek (V2-Lite: 27 layers) is refused.
    let other_files = ModelFiles::open(fixture("deepseek-v2-lite").to_str().unwrap()).unwrap();
    let other = DeepSeek::load(&other_files).unwrap();
    let mut other_cache = KvCache::new(&other);
    let err = model.forward(&[1], 0, &mut other_cache).unwrap_err();
    assert!(matches!(err, ModelError::CacheMismatch { .. }), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    // A source with every tensor of the fixture but one.
    struct Without<'a>(&'a dyn TensorSource, &'static str);
    impl TensorSource for Without<'_> {
        fn tensor_infos(&self) -> Vec<frugal_formats::TensorInfo> {
            self.0.tensor_infos()
        }
        fn tensor(&self, name: &str) -> Option<frugal_formats::TensorView<'_>> {
            if name == self.1 {
                None
            } else {
                self.0.tensor(name)
            }
        }
    }
    let files = ModelFiles::open(fixture("deepseek-v3").to_str().unwrap()).unwrap();
    let cfg = files.config().unwrap();
    let name = "model.layers.2.mlp.experts.5.up_proj.weight";
    let src = Without(files.tensors().unwrap(), name);
    let err = DeepSeek::from_parts(cfg, &src).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name: n } if n == name),
        "{err}"
    );
}

/// The cache really holds only the MLA latent and the shared rope key: its size after T tokens
/// is T × layers × (kv_lora_rank + qk_rope_head_dim) × 4 bytes, the figure `frugal inspect`
/// reports (`params::kv_cache_bytes_per_token`), for a model with and without q_lora.
#[test]
fn kv_cache_holds_only_the_latent() {
    for name in ["deepseek-v3", "deepseek-v2-lite"] {
        let files = ModelFiles::open(fixture(name).to_str().unwrap()).unwrap();
        let model = DeepSeek::load(&files).unwrap();
        let prompt = Reference::open(name).ids("prompt_ids");
        let mut cache = KvCache::new(&model);
        model.forward(&prompt, 0, &mut cache).unwrap();
        let per_token = frugal_model::params::kv_cache_bytes_per_token(model.config(), 4);
        let frugal_formats::config::Attention::Mla(mla) = &model.config().attention else {
            panic!("{name} is MLA");
        };
        let layers = model.config().num_hidden_layers as u64;
        assert_eq!(
            per_token,
            layers * (mla.kv_lora_rank + mla.qk_rope_head_dim) as u64 * 4
        );
        assert_eq!(
            cache.bytes() as u64,
            prompt.len() as u64 * per_token,
            "{name}"
        );
    }
}
