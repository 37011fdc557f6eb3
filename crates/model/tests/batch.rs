//! `Model::forward_batch` against transformers' logits on the fixture models: three sequences
//! share each pass, mixing a prefill chunk that continues a cache, a prefill from empty and
//! single decode tokens, and a truncated copy of a cache (prefix reuse). Each sequence's
//! last-position logits must match transformers' logits at that position (one pass over the
//! whole prompt), and the single-sequence `forward_last` on the same tokens.

use frugal_formats::ModelFiles;
use frugal_model::{BatchItem, KvCache, Model, ModelError};

mod support;
use support::*;

const TOL: f32 = 1e-4;

fn check_batch(name: &str) {
    let files = ModelFiles::open(fixture(name).to_str().unwrap()).unwrap();
    let model = Model::load(&files).unwrap();
    let r = Reference::open(name);
    let prompt = r.ids("prompt_ids");
    let (_, want) = r.f32("logits");
    let vocab = model.vocab_size();
    let row = |pos: usize| &want[pos * vocab..(pos + 1) * vocab];
    assert!(prompt.len() >= 24, "{name}: prompt too short for this test");

    // a: 10 positions cached; b: empty; c: 20 cached, then copied and cut back to 12 as d.
    let mut a = KvCache::new(&model);
    model.forward(&prompt[..10], 0, &mut a).unwrap();
    let mut b = KvCache::new(&model);
    let mut c = KvCache::new(&model);
    model.forward(&prompt[..20], 0, &mut c).unwrap();
    let mut d = c.clone();
    d.truncate(12);
    assert_eq!(d.len(), 12);

    // Step 1: a prefills 10..15, b prefills 0..8, c decodes 20, d decodes 12.
    let steps: [[std::ops::Range<usize>; 4]; 2] = [
        [10..15, 0..8, 20..21, 12..13],
        [15..16, 8..9, 21..22, 13..17],
    ];
    for (s, ranges) in steps.iter().enumerate() {
        let mut items: Vec<BatchItem<'_>> = [&mut a, &mut b, &mut c, &mut d]
            .into_iter()
            .zip(ranges)
            .map(|(cache, r)| BatchItem {
                tokens: prompt[r.clone()].to_vec(),
                cache,
            })
            .collect();
        let got = model.forward_batch(&mut items).unwrap();
        drop(items);
        for (i, (logits, r)) in got.iter().zip(ranges).enumerate() {
            let last = r.end - 1;
            let diff = max_abs_diff(logits, row(last));
            assert!(
                diff < TOL,
                "{name} step {s} sequence {i} position {last}: {diff} from transformers"
            );
        }
    }
    for (cache, len) in [(&a, 16), (&b, 9), (&c, 22), (&d, 17)] {
        assert_eq!(cache.len(), len);
    }

    // Same as one sequence alone through forward_last.
    let mut alone = KvCache::new(&model);
    model.forward(&prompt[..16], 0, &mut alone).unwrap();
    let single = model.forward_last(&prompt[16..17], 16, &mut alone).unwrap();
    let mut items = [BatchItem {
        tokens: prompt[16..17].to_vec(),
        cache: &mut a,
    }];
    let batched = model.forward_batch(&mut items).unwrap();
    assert!(max_abs_diff(&batched[0], &single) < 1e-5, "{name}");
}

#[test]
fn batch_matches_transformers_mla() {
    check_batch("deepseek-v3");
    check_batch("deepseek-v2-lite");
}

#[test]
fn batch_matches_transformers_gqa() {
    for name in ["qwen2", "qwen2-tied-swa", "qwen3-moe", "llama", "mixtral"] {
        check_batch(name);
    }
}

/// A bad item (empty, or a token outside the vocabulary) fails the whole batch before any
/// cache moves.
#[test]
fn bad_item_leaves_caches_alone() {
    let files = ModelFiles::open(fixture("deepseek-v3").to_str().unwrap()).unwrap();
    let model = Model::load(&files).unwrap();
    let vocab = model.vocab_size() as u32;
    let (mut a, mut b) = (KvCache::new(&model), KvCache::new(&model));
    let mut items = [
        BatchItem {
            tokens: vec![1, 2],
            cache: &mut a,
        },
        BatchItem {
            tokens: vec![3, vocab],
            cache: &mut b,
        },
    ];
    let err = model.forward_batch(&mut items).unwrap_err();
    assert!(matches!(err, ModelError::TokenOutOfRange { .. }), "{err}");
    items[1].tokens.clear();
    let err = model.forward_batch(&mut items).unwrap_err();
    assert!(matches!(err, ModelError::EmptyBatchItem), "{err}");
    drop(items);
    assert_eq!((a.len(), b.len()), (0, 0));
}
