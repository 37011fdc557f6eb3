//! A decode step allocates nothing once warmed up (issue 6), with f32 weights: MLA (Hugging
//! Face's joint `kv_b_proj`) and GQA, each with MoE (shared experts, grouped routers), at 1
//! and 2 threads. The counted steps' logits are checked against transformers' step-by-step
//! logits of the fixture's reference (`fixtures/models/NAME/reference.safetensors`).
//!
//! One `#[test]` in this binary (see `counting`).

use frugal_formats::ModelFiles;
use frugal_model::Model;

mod counting;
mod support;
use counting::{assert_no_allocs, decode};
use support::{fixture, max_abs_diff, Reference};

/// Fixture models of `fixtures/models` (f32 safetensors): decode the reference prompt
/// token by token and compare with transformers' step-by-step logits.
fn check_fixture(name: &str, tol: f32) {
    let files = ModelFiles::open(fixture(name).to_str().unwrap()).unwrap();
    let mut model = Model::load(&files).unwrap();
    let r = Reference::open(name);
    let prompt = r.ids("prompt_ids");
    let (_, want) = r.f32("logits_stepwise");
    for threads in [1, 2] {
        let (got, counts) = decode(&mut model, &prompt, threads);
        let d = max_abs_diff(&got, &want[..got.len()]);
        eprintln!("{name}, {threads} threads: max|Δlogits| vs transformers {d:.3e}");
        assert!(d <= tol, "{name}, {threads} threads: logits differ by {d}");
        assert_no_allocs(&format!("{name}, {threads} threads"), &counts);
    }
}

#[test]
fn decode_steps_allocate_nothing() {
    counting::init();
    check_fixture("deepseek-v2-lite", 1e-4);
    check_fixture("qwen3-moe", 1e-4);
}
