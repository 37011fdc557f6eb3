//! DeepSeek forward pass against transformers' outputs on the fixture models
//! (`fixtures/models/deepseek-*`, made by `fixtures/models/make_models.py`): logits of every
//! position in one pass and through the cache in chunks, routed experts per layer, and the
//! greedy continuation.

use std::path::PathBuf;

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{DType, ModelFiles, TensorSource};
use frugal_model::{DeepSeek, KvCache, ModelError, Trace};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    frugal_testdata::fixtures_dir().join("models").join(name)
}

struct Reference {
    st: SafetensorsFile,
    json: Value,
}

impl Reference {
    fn open(name: &str) -> Self {
        let dir = fixture(name);
        let st = SafetensorsFile::open(dir.join("reference.safetensors"))
            .expect("reference.safetensors");
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        Reference { st, json }
    }

    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self
            .st
            .tensor(name)
            .unwrap_or_else(|| panic!("reference has no {name}"));
        assert_eq!(t.dtype, DType::F32);
        let v = t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape.clone(), v)
    }

    fn i32(&self, name: &str) -> (Vec<usize>, Vec<i32>) {
        let t = self
            .st
            .tensor(name)
            .unwrap_or_else(|| panic!("reference has no {name}"));
        assert_eq!(t.dtype, DType::I32);
        let v = t
            .data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape.clone(), v)
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of `tokens` fed `chunk` at a time through one cache.
fn chunked(model: &DeepSeek<'_>, tokens: &[u32], chunk: usize) -> Vec<f32> {
    let mut cache = KvCache::new(model);
    let mut out = Vec::new();
    for c in tokens.chunks(chunk) {
        out.extend(model.forward(c, cache.len(), &mut cache).unwrap());
    }
    out
}

/// Every check on one fixture; returns the largest logits difference seen.
fn check_fixture(name: &str, tol: f32) -> f32 {
    let files = ModelFiles::open(fixture(name).to_str().unwrap()).unwrap();
    let model = DeepSeek::load(&files).unwrap();
    let r = Reference::open(name);
    let prompt = r.ids("prompt_ids");
    let (shape, want) = r.f32("logits");
    assert_eq!(shape, [prompt.len(), model.vocab_size()]);
    let (_, want_step) = r.f32("logits_stepwise");

    // One pass, with the trace.
    let mut cache = KvCache::new(&model);
    let mut trace = Trace::default();
    let got = model
        .forward_traced(&prompt, 0, &mut cache, Some(&mut trace))
        .unwrap();
    let d_one = max_abs_diff(&got, &want);

    // Hidden states after every layer.
    let (hs_shape, hs) = r.f32("hidden_states");
    assert_eq!(hs_shape[0], trace.hidden_states.len());
    let per = hs_shape[1] * hs_shape[2];
    let mut d_hidden = 0.0f32;
    for (i, got_h) in trace.hidden_states.iter().enumerate() {
        d_hidden = d_hidden.max(max_abs_diff(got_h, &hs[i * per..(i + 1) * per]));
    }

    // Routed experts and weights.
    let (re_shape, re) = r.i32("routed_experts");
    let (_, rw) = r.f32("routed_weights");
    let moe_layers: Vec<usize> = r.json["checks"]["moe_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        trace.routed.len(),
        moe_layers.len(),
        "{name}: MoE layer count"
    );
    let k = re_shape[2];
    let mut d_weights = 0.0f32;
    for (m, (layer, routes)) in trace.routed.iter().enumerate() {
        assert_eq!(*layer, moe_layers[m]);
        for (t, route) in routes.iter().enumerate() {
            let base = (m * prompt.len() + t) * k;
            let want_ids: Vec<usize> = re[base..base + k].iter().map(|&v| v as usize).collect();
            let got_ids: Vec<usize> = route.iter().map(|c| c.0).collect();
            assert_eq!(got_ids, want_ids, "{name}: layer {layer} token {t} experts");
            for (j, c) in route.iter().enumerate() {
                d_weights = d_weights.max((c.1 - rw[base + j]).abs());
            }
        }
    }

    // Through the cache: one token at a time, and in chunks of 3.
    let step = chunked(&model, &prompt, 1);
    let d_step = max_abs_diff(&step, &want_step);
    let d_chunk3 = max_abs_diff(&chunked(&model, &prompt, 3), &want);

    eprintln!(
        "{name}: max|Δlogits| one pass {d_one:.3e}, chunk 1 vs stepwise {d_step:.3e}, chunk 3 {d_chunk3:.3e}; \
         hidden {d_hidden:.3e}; routed weights {d_weights:.3e}"
    );
    for (what, d) in [
        ("one pass", d_one),
        ("chunk 1", d_step),
        ("chunk 3", d_chunk3),
    ] {
        assert!(d <= tol, "{name}: {what} logits differ by {d} > {tol}");
    }
    assert!(
        d_weights <= tol,
        "{name}: routed weights differ by {d_weights}"
    );

    // Greedy continuation through the cache.
    let want_new = r.ids("greedy_new_ids");
    let stops = r.ids("greedy_stop_ids");
    let mut cache = KvCache::new(&model);
    let vocab = model.vocab_size();
    let full = model
        .forward(&prompt, 0, &mut KvCache::new(&model))
        .unwrap();
    let mut logits = model.forward_last(&prompt, 0, &mut cache).unwrap();
    assert_eq!(
        logits,
        full[full.len() - vocab..],
        "forward_last is the last row of forward"
    );
    let mut new = Vec::new();
    while new.len() < want_new.len() {
        let next = argmax(&logits);
        new.push(next);
        if stops.contains(&next) {
            break;
        }
        logits = model
            .forward_last(&[next], cache.len(), &mut cache)
            .unwrap();
    }
    assert_eq!(new, want_new, "{name}: greedy continuation");
    d_one.max(d_step).max(d_chunk3)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The fixtures' logits have std ≈ 3; transformers' own one-pass vs stepwise difference is up
/// to ~5e-5 (`checks.stepwise_max_abs_diff`), so 1e-4 leaves room for a different summation
/// order only.
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
