//! SentencePiece-style BPE over UTF-8 characters (GGUF `tokenizer.ggml.model = "llama"`).
//!
//! The text (spaces already replaced by `▁` U+2581) starts as one symbol per UTF-8 character.
//! Every adjacent pair whose concatenation is a vocabulary token is a candidate; the candidate
//! whose token has the highest score (`tokenizer.ggml.scores`) is merged first, the leftmost
//! among equal scores. When no candidate is left, each symbol that is a token is emitted; one that
//! is not (a character outside the vocabulary) is written as its UTF-8 bytes with the byte
//! tokens `<0xNN>` (SentencePiece's byte fallback), or as `unk` when those are missing.
//! Reference: Kudo & Richardson, *SentencePiece* (2018); the merge order is the one of
//! SentencePiece's BPE model.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A merge candidate: symbols `left` and `right` (adjacent), making a token of this score.
#[derive(Debug)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text, to tell stale candidates (a side changed) apart.
    len: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Max-heap order: higher score first, then the lower left index.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// One symbol: a byte range of the text, linked to its live neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Encodes `text` (whitespace already escaped to `▁`) and appends ids to `out`.
///
/// `byte_token[b]` is the id of `<0xNN>` for byte `b`, when the vocabulary has it.
pub fn encode(
    text: &str,
    token_to_id: &HashMap<String, u32>,
    scores: &[f32],
    byte_token: &[Option<u32>; 256],
    unk: Option<u32>,
    out: &mut Vec<u32>,
) {
    let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        syms.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: None,
        });
        if i > 0 {
            syms[i - 1].next = Some(i);
        }
    }
    if syms.is_empty() {
        return;
    }
    let mut heap = BinaryHeap::new();
    let try_pair = |l: usize, r: usize, syms: &[Symbol], heap: &mut BinaryHeap<Candidate>| {
        let (a, b) = (syms[l], syms[r]);
        let merged = &text[a.start..a.start + a.len + b.len];
        if let Some(&id) = token_to_id.get(merged) {
            let score = scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Candidate {
                score,
                left: l,
                right: r,
                len: merged.len(),
            });
        }
    };
    for i in 1..syms.len() {
        try_pair(i - 1, i, &syms, &mut heap);
    }
    while let Some(c) = heap.pop() {
        let (l, r) = (syms[c.left], syms[c.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != c.len || l.next != Some(c.right) {
            continue;
        }
        syms[c.left].len += r.len;
        syms[c.right].len = 0;
        syms[c.left].next = r.next;
        if let Some(n) = r.next {
            syms[n].prev = Some(c.left);
        }
        if let Some(p) = syms[c.left].prev {
            try_pair(p, c.left, &syms, &mut heap);
        }
        if let Some(n) = syms[c.left].next {
            try_pair(c.left, n, &syms, &mut heap);
        }
    }
    // Every merged symbol is a token by construction; only single characters outside the
    // vocabulary fall back to bytes.
    let mut i = Some(0);
    while let Some(k) = i {
        let s = syms[k];
        let piece = &text[s.start..s.start + s.len];
        if let Some(&id) = token_to_id.get(piece) {
            out.push(id);
        } else {
            for b in piece.bytes() {
                if let Some(id) = byte_token[b as usize].or(unk) {
                    out.push(id);
                }
            }
        }
        i = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_score_first_and_byte_fallback() {
        let toks = ["▁", "a", "b", "▁a", "ab", "▁ab"];
        let vocab: HashMap<String, u32> = toks
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        // "ab" outranks "▁a": "▁" + "ab" then "▁ab".
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let mut bytes = [None; 256];
        bytes[0xC3] = Some(100);
        bytes[0xA9] = Some(101);
        let mut out = Vec::new();
        encode("▁abé", &vocab, &scores, &bytes, Some(99), &mut out);
        assert_eq!(out, vec![5, 100, 101]);
    }
}
