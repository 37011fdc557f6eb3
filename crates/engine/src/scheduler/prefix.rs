//! Finished sequences' caches, for requests that start with the same tokens.

use frugal_model::KvCache;

struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    pages: usize,
    last_used: u64,
}

/// Up to `capacity` caches keyed by the tokens they hold.
pub(super) struct PrefixCache {
    entries: Vec<Entry>,
    capacity: usize,
    clock: u64,
}

impl PrefixCache {
    pub(super) fn new(capacity: usize) -> Self {
        PrefixCache {
            entries: Vec::new(),
            capacity,
            clock: 0,
        }
    }

    /// KV pages held.
    pub(super) fn pages(&self) -> usize {
        self.entries.iter().map(|e| e.pages).sum()
    }

    /// Adds a cache (dropping the least recently used entry beyond capacity, and any entry
    /// whose tokens the new one extends).
    pub(super) fn insert(&mut self, tokens: Vec<u32>, cache: KvCache, pages: usize) {
        if self.capacity == 0 || tokens.is_empty() {
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            cache,
            pages,
            last_used: self.clock,
        });
        while self.entries.len() > self.capacity {
            self.evict_lru();
        }
    }

    /// Drops the least recently used entry; false when empty.
    pub(super) fn evict_lru(&mut self) -> bool {
        let Some(i) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_used) else {
            return false;
        };
        self.entries.swap_remove(i);
        true
    }

    /// A copy of the cache sharing the longest prefix with `prompt`, and that prefix's length
    /// (positions past it must be cut off by the caller). `None` when nothing is shared.
    pub(super) fn copy_longest(&mut self, prompt: &[u32]) -> Option<(KvCache, usize)> {
        let (i, common) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common)
            })
            .max_by_key(|&(_, c)| c)?;
        if common == 0 {
            return None;
        }
        self.clock += 1;
        let e = &mut self.entries[i];
        e.last_used = self.clock;
        Some((e.cache.clone(), common))
    }
}
