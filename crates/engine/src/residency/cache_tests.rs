//! The expert cache against the file's own bytes: a temporary file of known content, experts
//! at unaligned offsets, budgets of a few slots.

use std::io::Write;

use super::*;

/// A file of `len` pseudo-random bytes, and its content.
fn file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
    let data: Vec<u8> = (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&data).unwrap();
    f.flush().unwrap();
    (f, data)
}

/// `layers × per_layer` experts, parts of 3000/3000/5000 bytes packed from offset 100 (so
/// none is aligned), in layers 1.. (layer 0 dense, as in DeepSeek).
fn locations(layers: usize, per_layer: usize) -> Vec<ExpertLocation> {
    let mut at = 100u64;
    let mut out = Vec::new();
    for l in 1..=layers {
        for e in 0..per_layer {
            let mut parts = [(0, 0); 3];
            for (p, len) in [3000usize, 3000, 5000].into_iter().enumerate() {
                parts[p] = (at, len);
                at += len as u64 + 32;
            }
            out.push(ExpertLocation {
                layer: l,
                expert: e,
                file: 0,
                parts,
            });
        }
    }
    out
}

fn mapped<'a>(locs: &[ExpertLocation], data: &'a [u8]) -> Vec<ExpertBytes<'a>> {
    locs.iter()
        .map(|l| {
            let at = |p: usize| &data[l.parts[p].0 as usize..l.parts[p].0 as usize + l.parts[p].1];
            ExpertBytes {
                gate: at(0),
                up: at(1),
                down: at(2),
            }
        })
        .collect()
}

fn cache<'a>(
    path: &std::path::Path,
    locs: &[ExpertLocation],
    data: &'a [u8],
    slots: u64,
    policy: Policy,
) -> ExpertCache<'a> {
    // Every expert spans 3 + 1 + 2 = at most 7 aligned blocks (see slot_bytes).
    let slot = locs.iter().map(ExpertLocation::slot_bytes).max().unwrap() as u64;
    ExpertCache::new(
        locs.to_vec(),
        mapped(locs, data),
        vec![RangeReader::open(path).unwrap()],
        CacheConfig {
            capacity: slots * slot,
            policy,
            io_threads: 2,
            prefetch: false,
        },
    )
    .unwrap()
}

/// Asks for `experts` of `layer` and checks every byte against the file's content.
fn request(
    c: &ExpertCache<'_>,
    locs: &[ExpertLocation],
    data: &[u8],
    layer: usize,
    experts: &[usize],
) {
    let mut calls = 0;
    c.with_experts(layer, experts, &mut |bytes| {
        calls += 1;
        assert_eq!(bytes.len(), experts.len());
        for (b, &e) in bytes.iter().zip(experts) {
            let l = locs
                .iter()
                .find(|l| l.layer == layer && l.expert == e)
                .unwrap();
            for (got, &(off, len)) in [b.gate, b.up, b.down].iter().zip(&l.parts) {
                assert_eq!(
                    *got,
                    &data[off as usize..off as usize + len],
                    "layer {layer} expert {e}"
                );
            }
        }
    });
    assert_eq!(calls, 1);
}

#[test]
fn serves_the_file_bytes_and_counts_misses_evictions_and_bytes() {
    let locs = locations(2, 4);
    let (f, data) = file(200_000);
    let c = cache(f.path(), &locs, &data, 2, Policy::Lru);
    assert_eq!(c.stats().slots, 2);
    let size = 11_000u64;
    // Layer 1 {0, 1}: two misses. Again: two hits.
    request(&c, &locs, &data, 1, &[0, 1]);
    request(&c, &locs, &data, 1, &[0, 1]);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.evictions), (2, 2, 0));
    assert_eq!(s.bytes_read, 2 * size);
    // Layer 2 {3}: a miss evicting the least recent (1:0); then 1:1 hits, 1:0 misses again
    // and evicts 2:3 (1:1 was used after it).
    request(&c, &locs, &data, 2, &[3]);
    request(&c, &locs, &data, 1, &[1]);
    request(&c, &locs, &data, 1, &[0]);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.evictions), (3, 4, 2));
    assert_eq!(s.bytes_read, 4 * size);
    assert_eq!(s.resident_experts, 2);
    assert_eq!(s.resident_bytes, 2 * size);
    // Three experts at once with two slots: one is read into a temporary buffer.
    request(&c, &locs, &data, 2, &[0, 1, 2]);
    let s = c.stats();
    assert_eq!(s.misses, 7);
    assert_eq!(s.overflow_reads, 1);
    assert_eq!(s.bytes_read, 7 * size);
    assert_eq!(s.fallbacks, 0);
}

#[test]
fn lfu_keeps_the_frequent_expert_where_lru_drops_it() {
    let locs = locations(1, 4);
    let (f, data) = file(100_000);
    // Uses: 0 0 0 1 2 — then 0 again. LRU evicted 0 at `2` (least recent); LFU evicted 1.
    for (policy, hit_on_zero) in [(Policy::Lru, false), (Policy::Lfu, true)] {
        let c = cache(f.path(), &locs, &data, 2, policy);
        for e in [0, 0, 0, 1, 2] {
            request(&c, &locs, &data, 1, &[e]);
        }
        let before = c.stats().hits;
        request(&c, &locs, &data, 1, &[0]);
        assert_eq!(c.stats().hits == before + 1, hit_on_zero, "{policy:?}");
    }
}

#[test]
fn per_layer_budgets_keep_one_layer_from_evicting_another() {
    let locs = locations(2, 4);
    let (f, data) = file(200_000);
    // Four slots, two per layer. Layer 1 uses {0, 1}; layer 2 cycles through 4 experts.
    let c = cache(f.path(), &locs, &data, 4, Policy::PerLayerLru);
    request(&c, &locs, &data, 1, &[0, 1]);
    for e in [0, 1, 2, 3, 0, 1] {
        request(&c, &locs, &data, 2, &[e]);
    }
    let before = c.stats();
    request(&c, &locs, &data, 1, &[0, 1]);
    assert_eq!(c.stats().hits, before.hits + 2);
    // Under global LRU the same sequence pushes layer 1 out.
    let c = cache(f.path(), &locs, &data, 4, Policy::Lru);
    request(&c, &locs, &data, 1, &[0, 1]);
    for e in [0, 1, 2, 3, 0, 1] {
        request(&c, &locs, &data, 2, &[e]);
    }
    let before = c.stats();
    request(&c, &locs, &data, 1, &[0, 1]);
    assert_eq!(c.stats().hits, before.hits);
}

#[test]
fn prefetched_experts_are_hits() {
    let locs = locations(2, 4);
    let (f, data) = file(200_000);
    let c = cache(f.path(), &locs, &data, 8, Policy::Lru);
    c.prefetch(2, &[1, 3]);
    request(&c, &locs, &data, 2, &[1, 2, 3]);
    let s = c.stats();
    assert_eq!(
        (s.hits, s.misses, s.prefetch_hits, s.prefetch_reads),
        (2, 1, 2, 2)
    );
    assert_eq!(s.bytes_read, 3 * 11_000);
}

#[test]
fn a_short_file_falls_back_to_the_mapped_bytes() {
    let locs = locations(2, 4);
    let (_, data) = file(200_000);
    // The file on disk holds only the first 50 000 bytes: later experts cannot be read.
    let (short, _) = file(50_000);
    let c = cache(short.path(), &locs, &data, 2, Policy::Lru);
    request(&c, &locs, &data, 2, &[2, 3]);
    // And through a prefetch, and a temporary buffer.
    c.prefetch(1, &[3]);
    request(&c, &locs, &data, 1, &[3]);
    request(&c, &locs, &data, 2, &[0, 1, 2]);
    let s = c.stats();
    assert!(s.fallbacks >= 4, "{s:?}");
    // The first experts are in the file and were read.
    request(&c, &locs, &data, 1, &[0]);
    assert!(c.stats().bytes_read >= 11_000);
}

#[test]
fn refuses_belady_and_bytes_outside_a_file() {
    let locs = locations(1, 2);
    let (f, data) = file(100_000);
    let e = ExpertCache::new(
        locs.clone(),
        mapped(&locs, &data),
        vec![RangeReader::open(f.path()).unwrap()],
        CacheConfig {
            capacity: 1 << 20,
            policy: Policy::Belady,
            io_threads: 1,
            prefetch: false,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("belady"), "{e}");
    let experts = [RoutedExpert {
        layer: 1,
        expert: 0,
        parts: mapped(&locs, &data)[0],
    }];
    let e = ExpertCache::for_experts(
        &experts,
        |_| None,
        CacheConfig {
            capacity: 1 << 20,
            policy: Policy::Lru,
            io_threads: 1,
            prefetch: false,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CacheError::NotInFile {
                layer: 1,
                expert: 0
            }
        ),
        "{e}"
    );
}
