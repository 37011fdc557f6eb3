//! Several sequences in one forward pass: what a continuous-batching scheduler runs each step.
//!
//! The tokens of every sequence (a prompt chunk being prefilled, or the one new token of a
//! sequence being decoded) are stacked into one `[T, hidden]` matrix. Norms, every linear
//! layer and the MoE block then read each weight row once for all `T` rows; only attention is
//! split, each sequence attending over its own cache (see `SeqSpan`). The result for each
//! sequence equals [`Model::forward_last`] on it alone, up to float summation order (the
//! products are the same row-by-row dots).

use crate::blocks::with_local;
use crate::transformer::{KvCache, Model, WORKSPACE};
use crate::ModelError;

/// One sequence of a batch: tokens to append to its cache, at positions `cache.len()..`.
#[derive(Debug)]
pub struct BatchItem<'c> {
    /// The new tokens (at least one).
    pub tokens: Vec<u32>,
    /// The sequence's cache, extended by the pass.
    pub cache: &'c mut KvCache,
}

impl Model<'_> {
    /// Runs every item's tokens in one pass and returns, per item in order, the logits
    /// `[vocab]` of its last token. Every item is checked before any cache changes: on an
    /// error no cache has moved.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        for item in items.iter() {
            if item.tokens.is_empty() {
                return Err(ModelError::EmptyBatchItem);
            }
            self.check_input(&item.tokens, item.cache.len(), item.cache)?;
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.config().hidden_size;
        let mut seqs: Vec<(&[u32], &mut KvCache)> = items
            .iter_mut()
            .map(|it| (it.tokens.as_slice(), &mut *it.cache))
            .collect();
        let logits = with_local(&WORKSPACE, |ws| {
            self.run_stacked(ws, &mut seqs, None);
            // The last row of each sequence, then the LM head over just those rows.
            let mut last = Vec::with_capacity(seqs.len() * h);
            let mut end = 0;
            for (tokens, _) in &seqs {
                end += tokens.len();
                last.extend_from_slice(&ws.x[(end - 1) * h..end * h]);
            }
            let logits = self.head_rows(&last, &mut ws.xn);
            ws.release_after(end);
            logits
        });
        let vocab = self.vocab_size();
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}
