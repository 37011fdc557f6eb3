//! Shared by the forward-pass tests: the transformers references of a fixture model
//! (`fixtures/models/NAME/reference.{safetensors,json}`, made by `fixtures/models/make_models.py`)
//! and the full check of one fixture against them.
#![allow(dead_code)] // Each test crate uses a different subset.

use std::path::PathBuf;

use frugal_formats::safetensors::SafetensorsFile;
use frugal_formats::{DType, ModelFiles, TensorSource};
use frugal_model::{KvCache, Model, Trace};
pub use frugal_testdata::max_abs_diff;
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    frugal_testdata::fixtures_dir().join("models").join(name)
}

pub struct Reference {
    st: SafetensorsFile,
    json: Value,
}

impl Reference {
    pub fn open(name: &str) -> Self {
        let dir = fixture(name);
        let st = SafetensorsFile::open(dir.join("reference.safetensors"))
            .expect("reference.safetensors");
        let json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        Reference { st, json }
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
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

    pub fn i32(&self, name: &str) -> (Vec<usize>, Vec<i32>) {
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

    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    }
}

/// Logits of `tokens` fed `chunk` at a time through one cache.
pub fn chunked(model: &Model<'_>, tokens: &[u32], chunk: usize) -> Vec<f32> {
    let mut cache = KvCache::new(model);
    let mut out = Vec::new();
    for c in tokens.chunks(chunk) {
        out.extend(model.forward(c, cache.len(), &mut cache).unwrap());
    }
    out
}

/// Every check on one fixture; returns the largest logits difference seen.
pub fn check_fixture(name: &str, tol: f32) -> f32 {
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

    // The cache holds what `frugal inspect` reports per token (`params::kv_cache_bytes_per_token`):
    // MLA latent + rope key, or 2 · kv_heads · head_dim, per layer, in f32.
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

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}
