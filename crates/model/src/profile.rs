//! An opt-in wall-clock profile of the forward pass by phase (`frugal bench --profile`).
//!
//! Each phase is one step the calling thread runs or waits on (a parallel product, the
//! attention of all heads, a norm), timed around the call, so the phases add up to the
//! forward pass's wall time and show where a token's milliseconds go. Only the calling
//! thread times anything: spans inside pool tasks would count the same wall time twice.
//!
//! Off by default: a span then costs one relaxed load. On, two `Instant::now` per step,
//! about a thousand per decoded token of a 27-layer model, well under 1% of its time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A step of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Embedding rows.
    Embed,
    /// RMSNorms of the residual (attention, FFN and final norms).
    Norm,
    /// The attention input projections (`q`, `kv_a`, or `q/k/v`), one parallel step.
    AttnProj,
    /// Serial per-row work between them: latent norm, rope, appending to the cache.
    AttnCache,
    /// Attention proper over the cache, all heads (MLA: with the per-head `k_b`/`v_b`).
    AttnCore,
    /// The attention output projection.
    AttnOut,
    /// MoE router logits and the top-k choice.
    Router,
    /// Gate, up and SwiGLU of every expert (routed and shared) or dense MLP.
    FfnGateUp,
    /// Quantizing the MLPs' inputs (gathering each routed expert's rows) and the down
    /// projections' inputs.
    FfnQuant,
    /// The down projections.
    FfnDown,
    /// Weighting and summing expert outputs into the residual.
    FfnCombine,
    /// The LM head.
    LmHead,
}

impl Phase {
    /// Every phase, in forward order.
    pub const ALL: [Phase; 12] = [
        Phase::Embed,
        Phase::Norm,
        Phase::AttnProj,
        Phase::AttnCache,
        Phase::AttnCore,
        Phase::AttnOut,
        Phase::Router,
        Phase::FfnGateUp,
        Phase::FfnQuant,
        Phase::FfnDown,
        Phase::FfnCombine,
        Phase::LmHead,
    ];

    /// A short stable name (`attn.core`).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Embed => "embed",
            Phase::Norm => "norm",
            Phase::AttnProj => "attn.proj",
            Phase::AttnCache => "attn.cache",
            Phase::AttnCore => "attn.core",
            Phase::AttnOut => "attn.out",
            Phase::Router => "router",
            Phase::FfnGateUp => "ffn.gate_up",
            Phase::FfnQuant => "ffn.quant",
            Phase::FfnDown => "ffn.down",
            Phase::FfnCombine => "ffn.combine",
            Phase::LmHead => "lm_head",
        }
    }
}

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; Phase::ALL.len()] = [const { AtomicU64::new(0) }; Phase::ALL.len()];
static CALLS: [AtomicU64; Phase::ALL.len()] = [const { AtomicU64::new(0) }; Phase::ALL.len()];

/// Turns timing on or off for the whole process (counters keep their values).
pub fn enable(on: bool) {
    ON.store(on, Relaxed);
}

/// One phase's total since the last [`take`].
#[derive(Clone, Copy, Debug)]
pub struct PhaseTime {
    /// The phase.
    pub phase: Phase,
    /// Wall time spent in it.
    pub time: Duration,
    /// Spans counted (steps run).
    pub calls: u64,
}

/// Every phase's totals since the last call, which resets them.
pub fn take() -> Vec<PhaseTime> {
    Phase::ALL
        .iter()
        .enumerate()
        .map(|(i, &phase)| PhaseTime {
            phase,
            time: Duration::from_nanos(NANOS[i].swap(0, Relaxed)),
            calls: CALLS[i].swap(0, Relaxed),
        })
        .collect()
}

/// Times its phase until dropped (nothing when profiling is off).
#[must_use = "a span times until it is dropped"]
pub(crate) struct Span(Option<(usize, Instant)>);

/// Starts timing `phase`.
pub(crate) fn span(phase: Phase) -> Span {
    if !ON.load(Relaxed) {
        return Span(None);
    }
    // `ALL` lists the variants in declaration order.
    Span(Some((phase as usize, Instant::now())))
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((i, t0)) = self.0 {
            NANOS[i].fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
            CALLS[i].fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_variants_in_order() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i, "{}", p.name());
        }
    }
}
