//! Byte-level BPE (GPT-2 style), as GGUF `tokenizer.ggml.model = "gpt2"` describes it.
//!
//! Each byte of a pre-tokenized piece is first mapped to a printable character (GPT-2's
//! byte-to-unicode table: the printable Latin-1 bytes stand for themselves, the other 68 bytes
//! are shifted to U+0100..U+0143), so a token's text is a string over those 256 characters.
//! Encoding a piece starts from one symbol per byte-character and repeatedly merges the adjacent
//! pair whose merge (`tokenizer.ggml.merges`, `"left right"`) has the lowest rank (its index in
//! the list); among equal ranks the leftmost pair goes first. Reference: Sennrich et al., *Neural
//! Machine Translation of Rare Words with Subword Units* (2016); Radford et al., GPT-2 (2019).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// GPT-2's byte → character table, and its inverse.
#[derive(Debug)]
pub struct ByteLevel {
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
}

impl ByteLevel {
    /// Builds the table: printable bytes `!..~`, `¡..¬`, `®..ÿ` map to themselves; the rest, in
    /// byte order, to U+0100, U+0101, ...
    pub fn new() -> Self {
        let mut byte_to_char = ['\0'; 256];
        let mut next = 0u32;
        for b in 0u32..256 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            let c = if printable {
                b
            } else {
                next += 1;
                0x100 + next - 1
            };
            // OK because every value here is below U+0144, a valid scalar value.
            byte_to_char[b as usize] = char::from_u32(c).expect("OK because c < 0x144");
        }
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Self {
            byte_to_char,
            char_to_byte,
        }
    }

    /// The character standing for byte `b`.
    pub fn char_of(&self, b: u8) -> char {
        self.byte_to_char[b as usize]
    }

    /// The byte character `c` stands for, if it is in the table.
    pub fn byte_of(&self, c: char) -> Option<u8> {
        self.char_to_byte.get(&c).copied()
    }

    /// Decodes a token's byte-level text back to bytes; a character outside the table (only
    /// possible in a malformed vocabulary) stands for its own UTF-8 bytes.
    pub fn decode_into(&self, text: &str, out: &mut Vec<u8>) {
        for c in text.chars() {
            match self.char_to_byte.get(&c) {
                Some(&b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

impl Default for ByteLevel {
    fn default() -> Self {
        Self::new()
    }
}

/// The merge table of a byte-level BPE vocabulary, keyed by token ids.
#[derive(Debug)]
pub struct BpeModel {
    bytes: ByteLevel,
    /// Id of the token for each single byte (its byte-level character), if the vocab has one.
    byte_token: [Option<u32>; 256],
    /// `(left id, right id)` → `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Whether a piece that is itself a token is emitted whole, merges notwithstanding
    /// (HF `ignore_merges`, set by Llama 3's tokenizer).
    ignore_merges: bool,
}

impl BpeModel {
    /// Builds the model from the token → id map and the merge list. Merges whose parts or result
    /// are not tokens can never fire and are dropped (HF refuses such files; llama.cpp ignores
    /// them); the count of dropped merges is returned for logging.
    pub fn new(
        token_to_id: &HashMap<String, u32>,
        merges: &[String],
        ignore_merges: bool,
    ) -> Result<(Self, usize), super::TokenizerError> {
        let bytes = ByteLevel::new();
        let mut byte_token = [None; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            *slot = token_to_id
                .get(bytes.char_of(b as u8).to_string().as_str())
                .copied();
        }
        let mut table = HashMap::with_capacity(merges.len());
        let mut dropped = 0;
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            // A merge is "left right"; the left part never contains a space (spaces are byte
            // characters 'Ġ' in byte-level text), so the first space separates the parts.
            let Some((l, r)) = m.split_once(' ') else {
                return Err(super::TokenizerError::BadMerge {
                    index: rank,
                    merge: m.clone(),
                });
            };
            joined.clear();
            joined.push_str(l);
            joined.push_str(r);
            match (
                token_to_id.get(l),
                token_to_id.get(r),
                token_to_id.get(joined.as_str()),
            ) {
                (Some(&a), Some(&b), Some(&ab)) => {
                    let rank =
                        u32::try_from(rank).map_err(|_| super::TokenizerError::BadMerge {
                            index: rank,
                            merge: m.clone(),
                        })?;
                    // The first (lowest-rank) occurrence of a pair wins, as in HF.
                    table.entry((a, b)).or_insert((rank, ab));
                }
                _ => dropped += 1,
            }
        }
        Ok((
            Self {
                bytes,
                byte_token,
                merges: table,
                ignore_merges,
            },
            dropped,
        ))
    }

    /// The byte-level table.
    pub fn byte_level(&self) -> &ByteLevel {
        &self.bytes
    }

    /// Encodes one pre-tokenized piece, appending ids to `out`. Bytes with no token become
    /// `unk` when there is one and are dropped otherwise (HF's BPE without `unk_token`).
    pub fn encode_piece(
        &self,
        piece: &str,
        token_to_id: &HashMap<String, u32>,
        unk: Option<u32>,
        out: &mut Vec<u32>,
    ) {
        if self.ignore_merges {
            let text: String = piece.bytes().map(|b| self.bytes.char_of(b)).collect();
            if let Some(&id) = token_to_id.get(&text) {
                out.push(id);
                return;
            }
        }
        let mut syms: Vec<u32> = Vec::with_capacity(piece.len());
        for b in piece.bytes() {
            if let Some(id) = self.byte_token[b as usize].or(unk) {
                syms.push(id);
            }
        }
        self.merge(&mut syms);
        out.extend_from_slice(&syms);
    }

    /// Applies merges to `syms` in place: lowest rank first, leftmost first among equals.
    fn merge(&self, syms: &mut Vec<u32>) {
        let n = syms.len();
        if n < 2 {
            return;
        }
        // Doubly linked list over positions; a merged-away position gets `alive = false`.
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        // Heap entries: (rank, left position, left id, right id); an entry is stale when the
        // symbols at those positions have changed since it was pushed.
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&(rank, _)) = self.merges.get(&(syms[i], syms[i + 1])) {
                heap.push(Reverse((rank, i, syms[i], syms[i + 1])));
            }
        }
        while let Some(Reverse((_, i, a, b))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j >= n || syms[i] != a || syms[j] != b {
                continue;
            }
            // OK because the pair was found in the table when the entry was pushed.
            let &(_, ab) = self
                .merges
                .get(&(a, b))
                .expect("OK because the pair has a merge");
            syms[i] = ab;
            alive[j] = false;
            next[i] = next[j];
            if next[j] < n {
                prev[next[j]] = i;
            }
            let p = prev[i];
            if p < n {
                if let Some(&(rank, _)) = self.merges.get(&(syms[p], ab)) {
                    heap.push(Reverse((rank, p, syms[p], ab)));
                }
            }
            let k = next[i];
            if k < n {
                if let Some(&(rank, _)) = self.merges.get(&(ab, syms[k])) {
                    heap.push(Reverse((rank, i, ab, syms[k])));
                }
            }
        }
        let mut w = 0;
        for r in 0..n {
            if alive[r] {
                syms[w] = syms[r];
                w += 1;
            }
        }
        syms.truncate(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let t = ByteLevel::new();
        assert_eq!(t.char_of(b'A'), 'A');
        assert_eq!(t.char_of(b' '), 'Ġ');
        assert_eq!(t.char_of(b'\n'), 'Ċ');
        assert_eq!(t.char_of(0), 'Ā');
        assert_eq!(t.char_of(0xAD), 'Ń');
        let mut out = Vec::new();
        t.decode_into("ĠhelloĊ", &mut out);
        assert_eq!(out, b" hello\n");
    }

    #[test]
    fn merges_lowest_rank_leftmost_first() {
        let vocab: HashMap<String, u32> = ["a", "b", "ab", "aab", "aa"]
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        let merges = vec!["a b".to_string(), "a ab".to_string(), "a a".to_string()];
        let (m, dropped) =
            BpeModel::new(&vocab, &merges, false).expect("OK because merges are well-formed");
        assert_eq!(dropped, 0);
        let mut out = Vec::new();
        // "aab": a+b first (rank 0) → a ab → aab.
        m.encode_piece("aab", &vocab, None, &mut out);
        assert_eq!(out, vec![3]);
        out.clear();
        // "aaa": only "a a" fires, leftmost first → aa a.
        m.encode_piece("aaa", &vocab, None, &mut out);
        assert_eq!(out, vec![4, 0]);
    }
}
