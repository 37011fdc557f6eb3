//! Where a MoE block finds its routed experts' weights.
//!
//! Without a store, a routed expert's three matrices are views into the mapped model file, like
//! every other weight: the operating system pages them in on first use and keeps them. A model
//! whose experts exceed memory cannot work that way, because every touched page of the mapping
//! stays in the process's resident set. An [`ExpertStore`] (the engine's expert cache,
//! `frugal_engine::residency`) takes over instead: the MoE block asks it for the experts the
//! router chose, and the store hands back their bytes from its own bounded memory, reading the
//! misses from the file itself. The mapped views of routed experts are then never touched;
//! they only tell the store where each expert lies ([`RoutedExpert::parts`]).
//!
//! The store only supplies bytes; the arithmetic is the MoE block's, so a cached expert gives
//! exactly the result of the mapped one.

use super::ffn::Mlp;

/// A routed expert's three stored matrices (`gate`, `up`, `down`), as bytes laid out exactly
/// as in the model file.
#[derive(Clone, Copy, Debug)]
pub struct ExpertBytes<'b> {
    /// The gate projection (`[inter, hidden]`).
    pub gate: &'b [u8],
    /// The up projection (`[inter, hidden]`).
    pub up: &'b [u8],
    /// The down projection (`[hidden, inter]`).
    pub down: &'b [u8],
}

impl ExpertBytes<'_> {
    /// Total bytes of the three matrices.
    pub fn len(&self) -> usize {
        self.gate.len() + self.up.len() + self.down.len()
    }

    /// Whether all three are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One routed expert of a loaded model, for a store to locate and size.
#[derive(Clone, Copy, Debug)]
pub struct RoutedExpert<'a> {
    /// Decoder layer index.
    pub layer: usize,
    /// Expert id within the layer.
    pub expert: usize,
    /// Its matrices' bytes where the model keeps them (views into the mapped file for GGUF
    /// and safetensors models: a store finds the file offset from the address).
    pub parts: ExpertBytes<'a>,
}

/// Supplies routed experts' weights to the MoE blocks. Implementations decide what stays in
/// memory; they must hand back bytes equal to the model file's.
pub trait ExpertStore: Send + Sync {
    /// Call `f` once, with the bytes of each of `experts` (ids of decoder layer `layer`, in
    /// the order given). The slices live only for the call, so the store may evict them
    /// afterwards. Misses are read before `f` runs.
    fn with_experts(&self, layer: usize, experts: &[usize], f: &mut dyn FnMut(&[ExpertBytes<'_>]));

    /// A hint that `experts` of decoder layer `layer` will probably be asked for soon (for
    /// example the next MoE layer's router applied to the current hidden state). A store may
    /// start reading them in the background. The default ignores it.
    fn prefetch(&self, _layer: usize, _experts: &[usize]) {}

    /// Whether the model should compute and send [`ExpertStore::prefetch`] hints (applying
    /// the next MoE layer's router costs a small matrix product per layer, so a store that
    /// ignores hints says no, the default).
    fn wants_prefetch(&self) -> bool {
        false
    }
}

impl<'a> Mlp<'a> {
    /// This expert's stored bytes.
    pub fn expert_bytes(&self) -> ExpertBytes<'a> {
        let [gate, up, down] = self.projections();
        ExpertBytes {
            gate: gate.stored_data(),
            up: up.stored_data(),
            down: down.stored_data(),
        }
    }

    /// The same MLP over another copy of its bytes (see [`super::linear::Linear::rebased`]);
    /// `None` if a length differs.
    pub fn rebased<'b>(&self, bytes: &ExpertBytes<'b>) -> Option<Mlp<'b>>
    where
        'a: 'b,
    {
        let [gate, up, down] = self.projections();
        Some(Mlp::from_projections(
            gate.rebased(bytes.gate)?,
            up.rebased(bytes.up)?,
            down.rebased(bytes.down)?,
        ))
    }
}
