//! Grouped-query attention (Ainslie et al. 2023) as Llama, Qwen2, Qwen3-MoE and Mixtral use it,
//! with its own cache of per-kv-head keys and values.
//!
//! Per token (`n` query heads, `n_kv` key/value heads, `d` = `head_dim`, `g = n / n_kv`):
//!
//! ```text
//! q = q_proj(x) (+ bias)                 [n, d]      Qwen2: bias on q, k, v
//! k = k_proj(x) (+ bias)                 [n_kv, d]
//! v = v_proj(x) (+ bias)                 [n_kv, d]   (cached with k)
//! q, k = rmsnorm per head (Qwen3-MoE q_norm / k_norm), then rope on the first rotary dims
//!        (half-split pairs, `rotate_half`)
//! o_h = Σ_s softmax_s(d^-0.5 · q_h · k_{h/g, s}) v_{h/g, s}   s ≤ pos (and s > pos - window)
//! out = o_proj([o_1 … o_n]) (+ bias)     [H]
//! ```
//!
//! The sliding window follows transformers' `sliding_window_causal` mask: a query at `pos` sees
//! keys at `pos - window < s ≤ pos`. Reference: transformers 5.24 `modeling_llama.py`,
//! `modeling_qwen2.py`, `modeling_qwen3_moe.py`, `modeling_mixtral.py`.

use std::cell::RefCell;
use std::ops::Range;

use frugal_formats::config::GqaConfig;
use frugal_kernels::{matmul, norm, rope, softmax};

use super::heads::for_head_ranges;
use super::linear::{load_f32_vec, Linear, Weights};
use super::products::forward_many;
use super::rope::RopeRows;
use super::{with_local, SeqSpan};
use crate::profile::{self, Phase};
use crate::ModelError;

/// One layer's cache: keys (roped) and values of every position.
#[derive(Clone, Debug, Default)]
pub struct KvHeads {
    /// `[positions, n_kv, head_dim]`.
    pub k: Vec<f32>,
    /// `[positions, n_kv, head_dim]`.
    pub v: Vec<f32>,
}

/// A forward call's buffers, kept per thread (see [`with_local`]).
#[derive(Debug, Default)]
struct Scratch {
    /// `[T, n, d]`, `[T, n_kv, d]`, `[T, n_kv, d]`: the projections.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `[T, n, d]`: every head's attention output.
    heads: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// One query's scores over its context (on whichever thread attends the head).
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Frees this thread's [`SCRATCH`] (see [`super::release_scratch`]).
pub(super) fn release_scratch() {
    super::release_local(&SCRATCH);
}

/// A projection with an optional bias.
#[derive(Debug)]
struct Proj<'a> {
    w: Linear<'a>,
    b: Option<Vec<f32>>,
}

impl<'a> Proj<'a> {
    fn load(
        src: &dyn Weights<'a>,
        name: &str,
        rows: usize,
        cols: usize,
        bias: bool,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        Ok(Proj {
            w: Linear::load(src, &format!("{name}.weight"), rows, cols, fp8_block)?,
            b: if bias {
                Some(load_f32_vec(src, &format!("{name}.bias"), &[rows])?)
            } else {
                None
            },
        })
    }

    fn add_bias(&self, y: &mut [f32]) {
        if let Some(b) = &self.b {
            for row in y.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
    }
}

/// The attention block of one decoder layer.
#[derive(Debug)]
pub struct GqaAttention<'a> {
    q: Proj<'a>,
    k: Proj<'a>,
    v: Proj<'a>,
    o: Proj<'a>,
    /// Qwen3-MoE per-head RMSNorm weights `[head_dim]` of queries and keys.
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
    rotary_dim: usize,
    interleaved: bool,
    /// Keys visible to a query: this many positions ending at its own (`None`: all).
    window: Option<usize>,
    eps: f32,
    scale: f32,
}

/// Shape and settings of one layer's GQA, beyond the config's.
#[derive(Clone, Copy, Debug)]
pub struct GqaLayout {
    /// Model width.
    pub hidden: usize,
    /// Dims of each head that rope rotates.
    pub rotary_dim: usize,
    /// Whether this layer uses the config's sliding window.
    pub sliding: bool,
    /// Epsilon of the q/k norms.
    pub eps: f32,
    /// Rope rotates adjacent pairs `(2i, 2i+1)` instead of halves `(i, i + rot/2)`: for q/k
    /// weights whose rows llama.cpp's converter interleaved per head (Llama, Mixtral GGUFs).
    /// Scores are unchanged, as q and k share the same per-head permutation.
    pub interleaved: bool,
}

impl<'a> GqaAttention<'a> {
    /// Load `prefix.{q,k,v,o}_proj` (and `q_norm`/`k_norm`) (`prefix` =
    /// `model.layers.L.self_attn`).
    pub fn load(
        src: &dyn Weights<'a>,
        prefix: &str,
        g: &GqaConfig,
        layout: GqaLayout,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        let (n, n_kv, d, h) = (g.num_heads, g.num_kv_heads, g.head_dim, layout.hidden);
        if n == 0 || n_kv == 0 || n % n_kv != 0 || d == 0 {
            return Err(ModelError::UnsupportedConfig {
                what: format!("{n} query heads over {n_kv} key/value heads of dim {d}"),
            });
        }
        // Interleaved pairs stand for halves of the whole head (the converter permutes all d
        // rows), so they need rope over the whole head.
        if layout.rotary_dim > d
            || layout.rotary_dim % 2 == 1
            || (layout.interleaved && layout.rotary_dim != d)
        {
            return Err(ModelError::UnsupportedConfig {
                what: format!("rope over {} of {d} head dims", layout.rotary_dim),
            });
        }
        let proj = |name: &str, rows, cols, bias| {
            Proj::load(
                src,
                &format!("{prefix}.{name}"),
                rows,
                cols,
                bias,
                fp8_block,
            )
        };
        let qk_norm = if g.qk_norm {
            Some((
                load_f32_vec(src, &format!("{prefix}.q_norm.weight"), &[d])?,
                load_f32_vec(src, &format!("{prefix}.k_norm.weight"), &[d])?,
            ))
        } else {
            None
        };
        let window = match &g.sliding_window {
            Some(w) if layout.sliding => {
                if w.size == 0 {
                    return Err(ModelError::UnsupportedConfig {
                        what: "sliding window of 0 positions".into(),
                    });
                }
                Some(w.size)
            }
            _ => None,
        };
        Ok(GqaAttention {
            q: proj("q_proj", n * d, h, g.qkv_bias)?,
            k: proj("k_proj", n_kv * d, h, g.qkv_bias)?,
            v: proj("v_proj", n_kv * d, h, g.qkv_bias)?,
            o: proj("o_proj", h, n * d, g.o_bias)?,
            qk_norm,
            n_heads: n,
            n_kv,
            head_dim: d,
            rotary_dim: layout.rotary_dim,
            interleaved: layout.interleaved,
            window,
            eps: layout.eps,
            scale: (d as f64).powf(-0.5) as f32,
        })
    }

    /// `[n_kv, head_dim]`: what one position of this layer's cache holds.
    pub fn cache_shape(&self) -> [usize; 2] {
        [self.n_kv, self.head_dim]
    }

    /// Attend for the rows of `x` (the normed input `[T, hidden]`), which hold one or more
    /// sequences one after another: `spans` gives each sequence's row count, first position
    /// and cache (holding exactly `start_pos` positions; the rows' keys and values are
    /// appended). `rope` holds each row's cos/sin (half-split pairs). Projections run once
    /// over all rows; attention runs per sequence over its own cache. Writes `out`
    /// (`[T, hidden]`); the intermediate values live in this thread's scratch.
    pub fn forward(
        &self,
        x: &[f32],
        spans: &mut [SeqSpan<'_, KvHeads>],
        rope: &RopeRows,
        threads: usize,
        out: &mut [f32],
    ) {
        with_local(&SCRATCH, |s| {
            self.forward_in(s, x, spans, rope, threads, out)
        })
    }

    fn forward_in(
        &self,
        s: &mut Scratch,
        x: &[f32],
        spans: &mut [SeqSpan<'_, KvHeads>],
        rope: &RopeRows,
        threads: usize,
        out: &mut [f32],
    ) {
        let (n, n_kv, d, rot) = (self.n_heads, self.n_kv, self.head_dim, self.rotary_dim);
        let Scratch { q, k, v, heads } = s;
        // q, k and v in one parallel step over one quantization of x.
        let t = x.len() / self.q.w.cols();
        let proj_span = profile::span(Phase::AttnProj);
        q.resize(t * n * d, 0.0);
        k.resize(t * n_kv * d, 0.0);
        v.resize(t * n_kv * d, 0.0);
        forward_many(
            &[&self.q.w, &self.k.w, &self.v.w],
            x,
            &mut [&mut q[..], &mut k[..], &mut v[..]],
            threads,
        );
        self.q.add_bias(q);
        self.k.add_bias(k);
        self.v.add_bias(v);
        drop(proj_span);
        let cache_span = profile::span(Phase::AttnCache);
        for i in 0..t {
            let (cos, sin) = rope.row(i);
            for (heads, count, which) in [(&mut *q, n, 0), (&mut *k, n_kv, 1)] {
                for head in heads[i * count * d..(i + 1) * count * d].chunks_exact_mut(d) {
                    if let Some(w) = &self.qk_norm {
                        let w = if which == 0 { &w.0 } else { &w.1 };
                        norm::rmsnorm_inplace(head, w, self.eps);
                    }
                    rope::rope_inplace(&mut head[..rot], cos, sin, self.interleaved);
                }
            }
        }

        // Per sequence: append its keys and values, then attend over its own cache. Heads are
        // independent: split them over threads when there is enough work.
        drop(cache_span);
        let core_span = profile::span(Phase::AttnCore);
        let kv_row = n_kv * d;
        heads.resize(t * n * d, 0.0);
        let mut row = 0;
        for span in spans.iter_mut() {
            let (t, start_pos) = (span.len, span.start_pos);
            let rows = row * kv_row..(row + t) * kv_row;
            span.cache.k.extend_from_slice(&k[rows.clone()]);
            span.cache.v.extend_from_slice(&v[rows]);
            let qs = &q[row * n * d..(row + t) * n * d];
            let work = n * t * (start_pos + t) * d;
            let cache: &KvHeads = span.cache;
            let out = &mut heads[row * n * d..(row + t) * n * d];
            for_head_ranges(n, t, d, work, threads, out, |hs, block| {
                self.attend_heads(qs, t, start_pos, hs, cache, block)
            });
            row += t;
        }
        drop(core_span);
        let _span = profile::span(Phase::AttnOut);
        self.o.w.forward_into(heads, out, threads);
        self.o.add_bias(out);
    }

    /// Writes into `out` the outputs `[t, heads.len(), d]` of a range of query heads for `t`
    /// queries `q` (`[t, n, d]`, normed and roped) at positions `start_pos..`, over `cache`.
    fn attend_heads(
        &self,
        q: &[f32],
        t: usize,
        start_pos: usize,
        heads: Range<usize>,
        cache: &KvHeads,
        out: &mut [f32],
    ) {
        let (n, n_kv, d) = (self.n_heads, self.n_kv, self.head_dim);
        let group = n / n_kv;
        let nh = heads.len();
        assert_eq!(out.len(), t * nh * d, "attend_heads: output length");
        // The outputs are sums of `axpy`s from zero.
        out.fill(0.0);
        with_local(&SCORES, |scores| {
            // Room for the cache's capacity: a reserved cache grows this once.
            scores.reserve(cache.k.capacity() / (n_kv * d).max(1));
            for (j, h) in heads.enumerate() {
                let kv = h / group;
                for i in 0..t {
                    let pos = start_pos + i;
                    let first = match self.window {
                        Some(w) => (pos + 1).saturating_sub(w),
                        None => 0,
                    };
                    let qh = &q[(i * n + h) * d..(i * n + h + 1) * d];
                    let at = |s: usize| (s * n_kv + kv) * d..(s * n_kv + kv + 1) * d;
                    scores.clear();
                    scores.extend(
                        (first..=pos).map(|s| matmul::dot(qh, &cache.k[at(s)]) * self.scale),
                    );
                    softmax::softmax_inplace(scores);
                    let dst = &mut out[(i * nh + j) * d..(i * nh + j + 1) * d];
                    for (s, &p) in (first..=pos).zip(scores.iter()) {
                        matmul::axpy(p, &cache.v[at(s)], dst);
                    }
                }
            }
        })
    }
}
