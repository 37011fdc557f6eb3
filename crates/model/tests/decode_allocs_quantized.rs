//! A decode step of quantized GGUF models allocates nothing once warmed up (issue 6): integer
//! dot products over quantized activations, repacked Q4_K, GGUF's split MLA `k_b`/`v_b`.
//! The counted steps' logits equal, bit for bit, those of the same tokens decoded by
//! `forward_last` on a fresh, unreserved cache (the parity tests in `gguf.rs` compare that
//! path with llama.cpp).
//!
//! One `#[test]` in this binary (see `counting`).

use frugal_formats::ModelFiles;
use frugal_model::{KvCache, LoadOptions, Model};

mod counting;
mod support;
use counting::{assert_no_allocs, decode};
use support::max_abs_diff;

/// A quantized GGUF fixture (integer dot products, quantized activations, repacked Q4_K):
/// the counted steps' logits equal, bit for bit, those of the same tokens decoded by
/// `forward_last` on a fresh cache, and at 1 thread those of a plain growing cache.
fn check_gguf(dir: &str, file: &str) {
    let path = frugal_testdata::fixtures_dir()
        .join("gguf")
        .join(dir)
        .join(file);
    let files = ModelFiles::open(path.to_str().unwrap()).unwrap();
    let mut model = Model::load_with(&files, LoadOptions::default()).unwrap();
    let vocab = model.vocab_size() as u32;
    let tokens: Vec<u32> = (0..10u32).map(|i| (i * 37 + 5) % vocab).collect();
    for threads in [1, 2] {
        let (got, counts) = decode(&mut model, &tokens, threads);
        let mut cache = KvCache::new(&model);
        let mut want = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            want.extend(model.forward_last(&[t], i, &mut cache).unwrap());
        }
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{file}, {threads} threads: logits differ from forward_last's by {}",
            max_abs_diff(&got, &want)
        );
        assert_no_allocs(&format!("{file}, {threads} threads"), &counts);
    }
}

#[test]
fn quantized_decode_steps_allocate_nothing() {
    counting::init();
    check_gguf("deepseek-v3", "deepseek-v3-Q4_K_M.gguf");
    check_gguf("deepseek-v2-lite", "deepseek-v2-lite-Q8_0.gguf");
    check_gguf("qwen3-moe", "qwen3-moe-Q4_K_M.gguf");
}
