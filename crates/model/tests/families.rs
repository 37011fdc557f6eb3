//! The Qwen2, Llama, Qwen3-MoE and Mixtral forward passes (one decoder, the families' blocks)
//! against transformers' outputs on the fixture models (`fixtures/models/{qwen2,llama,qwen3-moe,
//! mixtral}`, made by `fixtures/models/make_models.py`): logits of every position in one pass
//! and through the cache in chunks of 1 (vs transformers' own stepwise logits) and 3, hidden
//! states after every layer, the routed experts of the MoE ones, and the greedy continuation.

use std::path::PathBuf;

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{DType, ModelFiles, TensorSource};
use frugal_model::{KvCache, Model, ModelError, Trace};
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
fn chunked(model: &Model<'_>, tokens: &[u32], chunk: usize) -> Vec<f32> {
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
    let model = Model::load(&files).unwrap();
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

    // Routed experts and weights (MoE fixtures only).
    let moe_layers: Vec<usize> = r.json["checks"]["moe_layers"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect())
        .unwrap_or_default();
    assert_eq!(
        trace.routed.len(),
        moe_layers.len(),
        "{name}: MoE layer count"
    );
    let mut d_weights = 0.0f32;
    if !moe_layers.is_empty() {
        let (re_shape, re) = r.i32("routed_experts");
        let (_, rw) = r.f32("routed_weights");
        let k = re_shape[2];
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
    }

    // Through the cache: one token at a time, and in chunks of 3.
    let d_step = max_abs_diff(&chunked(&model, &prompt, 1), &want_step);
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

    // The cache holds 2 · kv_heads · head_dim f32s per position and layer, the figure
    // `frugal inspect` reports.
    let frugal_formats::config::Attention::Gqa(g) = &model.config().attention else {
        panic!("{name} is GQA");
    };
    let layers = model.config().num_hidden_layers;
    assert_eq!(
        cache.bytes(),
        prompt.len() * layers * 2 * g.num_kv_heads * g.head_dim * 4
    );
    assert_eq!(
        cache.bytes() as u64,
        prompt.len() as u64 * frugal_model::params::kv_cache_bytes_per_token(model.config(), 4)
    );

    // Greedy continuation through the cache.
    let want_new = r.ids("greedy_new_ids");
    let stops = r.ids("greedy_stop_ids");
    let mut cache = KvCache::new(&model);
    let vocab = model.vocab_size();
    let mut logits = model.forward_last(&prompt, 0, &mut cache).unwrap();
    assert_eq!(
        logits,
        got[got.len() - vocab..],
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
