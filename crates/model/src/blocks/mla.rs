//! Multi-head latent attention (DeepSeek-V2 §2.1) over the compressed cache, with absorbed or
//! expanded projections.
//!
//! Per token (shapes for one token; `H` hidden, `n` heads, `dn`/`dr`/`dv` the nope/rope/value
//! head dims, `r_kv` = `kv_lora_rank`):
//!
//! ```text
//! q      = q_b(rmsnorm(q_a(x)))  or  q_proj(x)          [n, dn + dr]
//! [c, k] = kv_a_proj_with_mqa(x)                          [r_kv + dr]
//! c      = rmsnorm(c)                 (cached: the latent) [r_kv]
//! k_rope = rope(k, pos)               (cached: shared key) [dr]
//! ```
//!
//! `kv_b_proj` (`[n (dn + dv), r_kv]`) holds per head `W_UK_h` (`dn` rows) then `W_UV_h`
//! (`dv` rows): the keys are `W_UK_h c_s`, the values `W_UV_h c_s`. Instead of expanding them,
//! the key map is folded into the query and the value map applied after attending:
//!
//! ```text
//! q_lat_h = W_UK_h^T q_nope_h                              [r_kv]
//! score   = scale · (q_lat_h · c_s + q_rope_h · k_rope_s)  for every cached s ≤ pos
//! o_h     = W_UV_h (Σ_s softmax(score)_s c_s)              [dv]
//! out     = o_proj([o_1 … o_n])                            [H]
//! ```
//!
//! which equals the reference's expanded attention, only summed in another order.
//!
//! Two ways to compute the same attention, chosen per call by a count of multiply-adds
//! (`MlaAttention::choose_path`):
//!
//! - [`MlaPath::Absorbed`] (above; `absorbed.rs`): nothing is decompressed, every score costs
//!   `r_kv + dr` and every value `r_kv` per head, plus the two per-head products per query.
//!   Cheapest when few queries meet a long cache (decode, short appends). The heads of a range
//!   (and consecutive queries) share each read of a cached latent: per block of cached
//!   positions, the scores of a group of `GROUP` (query, head) pairs are one
//!   `[GROUP, r_kv] × [block, r_kv]ᵀ` product (tiles of 4 pairs × 4 positions), their value
//!   sums one `[GROUP, block] × [block, r_kv]` product, under an online softmax (the
//!   `absorbed` module docs). One query over a deep cache splits it between threads by
//!   position rather than by head.
//! - [`MlaPath::Expanded`] (`expanded.rs`): per head, `K_h = C W_UK_hᵀ` and `V_h = C W_UV_hᵀ`
//!   are decompressed once for every cached position (`C` the `[ctx, r_kv]` latents), then
//!   attention runs in `dn + dr` and `dv` dimensions. Decompressing costs `ctx (dn + dv) r_kv`
//!   per head but each (query, key) pair then costs `dn + dr + dv` instead of `2 r_kv + dr`
//!   (320 against 1088 for DeepSeek V3), and the per-query products disappear. Over a deep
//!   cache that pays off from `(dn + dv) r_kv / (2 r_kv - dn - dv)` ≈ 171 queries per call
//!   (V3), from an empty one after a few dozen: prefill.

mod absorbed;
mod expanded;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use frugal_formats::config::MlaConfig;
use frugal_kernels::{norm, rope};

use super::heads::for_head_ranges;
use super::linear::{load_f32_vec, Linear, Weights};
use super::products::forward_many;
use super::rope::{RopeRows, RopeTable};
use super::{with_local, SeqSpan};
use crate::profile::{self, Phase};
use crate::ModelError;

/// (query, head) pairs of the absorbed path scored together against each cached latent row
/// (8: all heads of a range of up to 8, or several queries of fewer heads).
const GROUP: usize = 8;

/// Queries of the expanded path whose scores are computed as one block (`[QE, ctx]`).
const QE: usize = 64;

/// How one call computes attention (the module docs compare the two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlaPath {
    /// Queries absorb `W_UK_h`; attention over the latents; `W_UV_h` applied after.
    Absorbed,
    /// Keys and values decompressed per head for every cached position.
    Expanded,
}

/// [`force_path`]: 0 not called (`FRUGAL_MLA_PATH` decides), 1 absorbed, 2 expanded, 3 by cost.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// Makes every MLA call in this process take `path` (`None`: choose by cost, the default), to
/// compare the two paths in tests and benchmarks. `FRUGAL_MLA_PATH=absorbed|expanded` does the
/// same from the environment (read once, overridden by this call).
pub fn force_path(path: Option<MlaPath>) {
    let v = match path {
        None => 3,
        Some(MlaPath::Absorbed) => 1,
        Some(MlaPath::Expanded) => 2,
    };
    FORCED.store(v, Ordering::Relaxed);
}

/// The forced path, if any ([`force_path`], else `FRUGAL_MLA_PATH`).
fn forced_path() -> Option<MlaPath> {
    static ENV: OnceLock<Option<MlaPath>> = OnceLock::new();
    match FORCED.load(Ordering::Relaxed) {
        1 => Some(MlaPath::Absorbed),
        2 => Some(MlaPath::Expanded),
        3 => None,
        _ => *ENV.get_or_init(|| match std::env::var("FRUGAL_MLA_PATH").ok()?.trim() {
            "absorbed" => Some(MlaPath::Absorbed),
            "expanded" => Some(MlaPath::Expanded),
            _ => None,
        }),
    }
}

/// transformers builds `q_a_layernorm` and `kv_a_layernorm` with the default eps, not
/// `rms_norm_eps`.
const LATENT_NORM_EPS: f32 = 1e-6;

/// How queries are projected.
#[derive(Debug)]
enum QProj<'a> {
    /// `q_a_proj` → RMSNorm → `q_b_proj` (V2, V3).
    LowRank {
        a: Linear<'a>,
        norm: Vec<f32>,
        b: Linear<'a>,
    },
    /// One `q_proj` (V2-Lite).
    Direct(Linear<'a>),
}

/// A forward call's buffers, kept per thread (see [`with_local`]).
#[derive(Debug, Default)]
struct Scratch {
    /// `[T, r_kv + dr]`: each row's latent and shared rope key.
    kv: Vec<f32>,
    /// `[T, q_lora_rank]`: the low-rank query (V2, V3).
    qa: Vec<f32>,
    /// `[T, n, dn + dr]`: the queries.
    q: Vec<f32>,
    /// `[T, n, dv]`: every head's attention output.
    heads: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Frees this thread's [`SCRATCH`] (see [`super::release_scratch`]).
pub(super) fn release_scratch() {
    super::release_local(&SCRATCH);
}

/// One layer's compressed cache: the normed latents and the roped shared keys.
#[derive(Clone, Debug, Default)]
pub struct LatentCache {
    /// `[positions, kv_lora_rank]`.
    pub latent: Vec<f32>,
    /// `[positions, qk_rope_head_dim]`.
    pub rope_key: Vec<f32>,
}

/// The up-projections `W_UK`, `W_UV` of the latent, as stored.
#[derive(Debug)]
enum KvB<'a> {
    /// `kv_b_proj` `[n (dn + dv), r_kv]`: per head `W_UK_h` then `W_UV_h` (Hugging Face).
    Joint(Linear<'a>),
    /// llama.cpp's split: `k_b` `[n r_kv, dn]` (per head `W_UK_h^T`) and `v_b` `[n dv, r_kv]`
    /// (per head `W_UV_h`), GGUF's `attn_k_b` / `attn_v_b`.
    Split { k_b: Linear<'a>, v_b: Linear<'a> },
}

/// The attention block of one decoder layer.
#[derive(Debug)]
pub struct MlaAttention<'a> {
    q: QProj<'a>,
    kv_a: Linear<'a>,
    kv_norm: Vec<f32>,
    kv_b: KvB<'a>,
    o: Linear<'a>,
    n_heads: usize,
    dn: usize,
    dr: usize,
    dv: usize,
    r_kv: usize,
    scale: f32,
}

impl<'a> MlaAttention<'a> {
    /// Load `prefix.{q_a_proj,…}` (`prefix` = `model.layers.L.self_attn`).
    pub fn load(
        src: &dyn Weights<'a>,
        prefix: &str,
        hidden: usize,
        m: &MlaConfig,
        scale: f32,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        if m.attention_bias {
            return Err(ModelError::UnsupportedConfig {
                what: "MLA with attention_bias".into(),
            });
        }
        let (n, dn, dr, dv, r_kv) = (
            m.num_heads,
            m.qk_nope_head_dim,
            m.qk_rope_head_dim,
            m.v_head_dim,
            m.kv_lora_rank,
        );
        let lin = |name: &str, rows, cols| {
            Linear::load(
                src,
                &format!("{prefix}.{name}.weight"),
                rows,
                cols,
                fp8_block,
            )
        };
        let q = match m.q_lora_rank {
            Some(r) => QProj::LowRank {
                a: lin("q_a_proj", r, hidden)?,
                norm: load_f32_vec(src, &format!("{prefix}.q_a_layernorm.weight"), &[r])?,
                b: lin("q_b_proj", n * (dn + dr), r)?,
            },
            None => QProj::Direct(lin("q_proj", n * (dn + dr), hidden)?),
        };
        Ok(MlaAttention {
            q,
            kv_a: lin("kv_a_proj_with_mqa", r_kv + dr, hidden)?,
            kv_norm: load_f32_vec(src, &format!("{prefix}.kv_a_layernorm.weight"), &[r_kv])?,
            kv_b: if src.tensor(&format!("{prefix}.kv_b_proj.weight")).is_none()
                && src.tensor(&format!("{prefix}.k_b_proj.weight")).is_some()
            {
                KvB::Split {
                    k_b: lin("k_b_proj", n * r_kv, dn)?,
                    v_b: lin("v_b_proj", n * dv, r_kv)?,
                }
            } else {
                KvB::Joint(lin("kv_b_proj", n * (dn + dv), r_kv)?)
            },
            o: lin("o_proj", hidden, n * dv)?,
            n_heads: n,
            dn,
            dr,
            dv,
            r_kv,
            scale,
        })
    }

    /// Attend for the rows of `x` (the normed input `[T, hidden]`), which hold one or more
    /// sequences one after another: `spans` gives each sequence's row count, first position
    /// and cache (holding exactly `start_pos` positions; the rows' latents are appended).
    /// `rope` holds each row's cos/sin. Projections run once over all rows; attention runs
    /// per sequence over its own cache. Writes `out` (`[T, hidden]`); the intermediate
    /// values live in this thread's scratch.
    pub fn forward(
        &self,
        x: &[f32],
        spans: &mut [SeqSpan<'_, LatentCache>],
        rope_table: &RopeTable,
        rope: &RopeRows,
        threads: usize,
        out: &mut [f32],
    ) {
        with_local(&SCRATCH, |s| {
            self.forward_in(s, x, spans, rope_table.interleaved(), rope, threads, out)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_in(
        &self,
        s: &mut Scratch,
        x: &[f32],
        spans: &mut [SeqSpan<'_, LatentCache>],
        interleaved: bool,
        rope: &RopeRows,
        threads: usize,
        out: &mut [f32],
    ) {
        let (n, dn, dr, dv, r_kv) = (self.n_heads, self.dn, self.dr, self.dv, self.r_kv);
        let qk = dn + dr;
        let Scratch { kv, qa, q, heads } = s;

        // Queries [T, n, dn + dr] and the latent with the shared rope key [T, r_kv + dr]: the
        // two products of x run as one parallel step over one quantization of x.
        let t = x.len() / self.kv_a.cols();
        let proj_span = profile::span(Phase::AttnProj);
        kv.resize(t * (r_kv + dr), 0.0);
        match &self.q {
            QProj::LowRank { a, norm: w, b } => {
                qa.resize(t * a.rows(), 0.0);
                forward_many(
                    &[a, &self.kv_a],
                    x,
                    &mut [&mut qa[..], &mut kv[..]],
                    threads,
                );
                for row in qa.chunks_exact_mut(a.rows()) {
                    norm::rmsnorm_inplace(row, w, LATENT_NORM_EPS);
                }
                q.resize(t * b.rows(), 0.0);
                b.forward_into(qa, q, threads);
            }
            QProj::Direct(p) => {
                q.resize(t * p.rows(), 0.0);
                forward_many(&[p, &self.kv_a], x, &mut [&mut q[..], &mut kv[..]], threads);
            }
        }

        drop(proj_span);

        // Latents (normed) and rope keys (roped) → each sequence's cache.
        let cache_span = profile::span(Phase::AttnCache);
        let mut rows = kv.chunks_exact_mut(r_kv + dr).enumerate();
        for span in spans.iter_mut() {
            for (i, row) in rows.by_ref().take(span.len) {
                let (cos, sin) = rope.row(i);
                let (c, k) = row.split_at_mut(r_kv);
                norm::rmsnorm_inplace(c, &self.kv_norm, LATENT_NORM_EPS);
                rope::rope_inplace(k, cos, sin, interleaved);
                span.cache.latent.extend_from_slice(c);
                span.cache.rope_key.extend_from_slice(k);
                for h in 0..n {
                    let qr = &mut q[(i * n + h) * qk + dn..(i * n + h + 1) * qk];
                    rope::rope_inplace(qr, cos, sin, interleaved);
                }
            }
        }

        drop(cache_span);

        // Per sequence: attention of every head over its cache, by the cheaper path. Heads
        // are independent: split them over threads when there is enough work.
        let core_span = profile::span(Phase::AttnCore);
        heads.resize(t * n * dv, 0.0);
        let mut row = 0;
        for span in spans.iter() {
            let (t, start_pos) = (span.len, span.start_pos);
            let qs = &q[row * n * qk..(row + t) * n * qk];
            let (path, per_head) = self.choose_path(t, start_pos);
            let cache: &LatentCache = span.cache;
            let block = &mut heads[row * n * dv..(row + t) * n * dv];
            if path == MlaPath::Absorbed
                && t == 1
                && threads > 1
                && start_pos + 1 >= absorbed::SPLIT_MIN_POSITIONS
            {
                // One query over a deep cache: split by position, not by head.
                self.attend_absorbed_split(qs, start_pos, cache, threads, block);
                row += t;
                continue;
            }
            for_head_ranges(
                n,
                t,
                dv,
                n * per_head,
                threads,
                block,
                |hs, block| match path {
                    MlaPath::Absorbed => self.attend_absorbed(qs, t, start_pos, hs, cache, block),
                    MlaPath::Expanded => {
                        block.copy_from_slice(&self.attend_expanded(qs, t, start_pos, hs, cache))
                    }
                },
            );
            row += t;
        }
        drop(core_span);
        let _span = profile::span(Phase::AttnOut);
        self.o.forward_into(heads, out, threads);
    }

    /// The path for `t` queries at positions `start_pos..` and its multiply-adds per head.
    ///
    /// With `P = t·start_pos + t(t+1)/2` (query, key) pairs and `L = start_pos + t` cached
    /// positions: absorbed costs `P (2 r_kv + dr)` for scores and values plus
    /// `t (dn + dv) r_kv` for the two per-head products; expanded costs `L (dn + dv) r_kv` to
    /// decompress keys and values, `dn · r_kv` to decode `W_UK_h`, and `(dn + dr + dv)` per
    /// pair, counting the pairs its `QE`-query score blocks compute past the causal edge.
    pub(crate) fn choose_path(&self, t: usize, start_pos: usize) -> (MlaPath, usize) {
        let (dn, dr, dv, r_kv) = (self.dn, self.dr, self.dv, self.r_kv);
        let pairs = t * start_pos + t * (t + 1) / 2;
        let absorbed = pairs * (2 * r_kv + dr) + t * (dn + dv) * r_kv;
        let expanded = (start_pos + t) * (dn + dv) * r_kv
            + dn * r_kv
            + (pairs + t * QE.min(t) / 2) * (dn + dr + dv);
        let path = forced_path().unwrap_or(if expanded < absorbed {
            MlaPath::Expanded
        } else {
            MlaPath::Absorbed
        });
        let cost = match path {
            MlaPath::Absorbed => absorbed,
            MlaPath::Expanded => expanded,
        };
        (path, cost)
    }
}
