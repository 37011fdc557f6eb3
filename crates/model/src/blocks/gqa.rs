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
use frugal_kernels::matmul::{gemm_nn_streamed, gemm_nt, MatMut, MatRef};
use frugal_kernels::{norm, rope};

use super::heads::{attend_split, for_head_ranges, Running};
use super::linear::{load_f32_vec, Linear, Weights};
use super::products::forward_many;
use super::rope::RopeRows;
use super::{with_local, SeqSpan};
use crate::profile::{self, Phase};
use crate::ModelError;

/// One layer's cache: keys (roped) and values of every position, kv head by kv head.
///
/// Each kv head's keys and values are their own `[positions, head_dim]` buffers: one thread
/// attends a kv head's query heads by reading two sequential streams. Interleaved by position
/// (`[positions, n_kv, head_dim]`), a kv head's rows are `1/n_kv` of the bytes the streams
/// pass over; on Zen 4 (one thread, 28 layers of 4096 positions, 128 dims, 2 kv heads) one
/// head's scores then read its keys at 4.4–5.7 GB/s, against 9.5 GB/s contiguous. In the
/// model (Qwen2-1.5B, `frugal bench -p 0 -n 32 -t T -d 4096 --profile`, old and new binaries
/// alternated) the attention step took 12.2–13.0 ms per token instead of 17.9–22.9 on two
/// threads, 24.1 instead of 32.8 on one; decode ran 1.18–1.24× as fast.
#[derive(Clone, Debug)]
pub struct KvHeads {
    /// Per kv head `[positions, head_dim]`.
    k: Vec<Vec<f32>>,
    /// Per kv head `[positions, head_dim]`.
    v: Vec<Vec<f32>>,
    head_dim: usize,
}

impl KvHeads {
    /// An empty cache of `n_kv` heads of `head_dim` values.
    pub fn new(n_kv: usize, head_dim: usize) -> Self {
        KvHeads {
            k: vec![Vec::new(); n_kv],
            v: vec![Vec::new(); n_kv],
            head_dim,
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.k.first().map_or(0, |k| k.len() / self.head_dim.max(1))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends positions from `k` and `v`, each `[positions, n_kv, head_dim]`.
    fn append(&mut self, k: &[f32], v: &[f32]) {
        let d = self.head_dim;
        for (src, dst) in [(k, &mut self.k), (v, &mut self.v)] {
            for row in src.chunks_exact(d * dst.len()) {
                for (head, x) in dst.iter_mut().zip(row.chunks_exact(d)) {
                    head.extend_from_slice(x);
                }
            }
        }
    }

    /// Makes room for `more` positions beyond those cached. A refused reservation (an
    /// implausibly long one) leaves the buffers to grow as positions are appended.
    pub fn reserve(&mut self, more: usize) {
        let Some(values) = more.checked_mul(self.head_dim) else {
            return;
        };
        for head in self.k.iter_mut().chain(&mut self.v) {
            let _ = head.try_reserve(values);
        }
    }

    /// Writes zeros over the room [`KvHeads::reserve`] made (see `KvCache::prefault`).
    pub fn prefault(&mut self) {
        for head in self.k.iter_mut().chain(&mut self.v) {
            head.spare_capacity_mut()
                .iter_mut()
                .for_each(|x| _ = x.write(0.0));
        }
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        let values = len.saturating_mul(self.head_dim);
        for head in self.k.iter_mut().chain(&mut self.v) {
            head.truncate(values);
        }
    }

    /// Values held (keys and values of every head).
    pub fn values(&self) -> usize {
        self.k.iter().chain(&self.v).map(Vec::len).sum()
    }
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

/// Cached positions per block of [`GqaAttention::attend_heads`]: a block's keys and values of
/// one kv head (`BLOCK · head_dim` f32 each, 128 KiB for `head_dim` = 128) stay in L2 from
/// its scores to its values.
const BLOCK: usize = 256;

/// Cached positions (inside the window) from which one query's attention is split between
/// threads by position ([`attend_split`]) rather than by head, when there are more threads
/// than kv heads. Split by head, several threads then share a kv head and each reads all of
/// its keys and values; split by position, every cached byte is read once (as `mla::absorbed`,
/// whose by-head split has every thread read the whole latent cache, and whose threshold this
/// is). With no more threads than kv heads, the by-head split already reads each byte once;
/// on Qwen2-1.5B (2 kv heads, 2 threads; the two ways alternated token by token in one
/// process) the position split took 0.74× as long at 4096 positions while two threads read
/// 67 GB/s, but 1.09–1.10× while they read 35 GB/s (this machine's two states), 1.09–1.25×
/// at 3072 and 1.13–1.16× at 2048 (38 GB/s), so it is not used there. (Measured with the
/// earlier cache interleaved by position, see [`KvHeads`].)
const SPLIT_MIN_POSITIONS: usize = 1024;

/// [`GqaAttention::attend_heads`]' buffers.
#[derive(Debug, Default)]
struct AttendScratch {
    /// `[g, BLOCK]`: a group of heads' scores, then probabilities, over one block.
    scores: Vec<f32>,
    /// Each head's online-softmax state.
    running: Vec<Running>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// [`GqaAttention::attend_heads`]' buffers (on whichever thread attends the heads).
    static ATTEND: RefCell<AttendScratch> = RefCell::new(AttendScratch::default());
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
            span.cache.append(&k[rows.clone()], &v[rows]);
            let qs = &q[row * n * d..(row + t) * n * d];
            let work = n * t * (start_pos + t) * d;
            let cache: &KvHeads = span.cache;
            let out = &mut heads[row * n * d..(row + t) * n * d];
            let first = self.window.map_or(0, |w| (start_pos + 1).saturating_sub(w));
            if t == 1 && threads > n_kv && start_pos + 1 - first >= SPLIT_MIN_POSITIONS {
                self.attend_split(qs, start_pos, cache, threads, out);
            } else {
                for_head_ranges(n, t, d, work, threads, out, |hs, block| {
                    self.attend_heads(qs, t, start_pos, hs, cache, block)
                });
            }
            row += t;
        }
        drop(core_span);
        let _span = profile::span(Phase::AttnOut);
        self.o.w.forward_into(heads, out, threads);
        self.o.add_bias(out);
    }

    /// Writes into `out` the outputs `[t, heads.len(), d]` of a range of query heads for `t`
    /// queries `q` (`[t, n, d]`, normed and roped) at positions `start_pos..`, over `cache`.
    ///
    /// The heads of the range that share a kv head attend together, over blocks of [`BLOCK`]
    /// cached positions with an online softmax: a block's scores for the `g` heads are one
    /// `[g, d] × [block, d]ᵀ` product (`matmul::gemm_nt`), then, while the block is in cache,
    /// `o += exp(scores − m) V_block` (`matmul::gemm_nn`), where `m` is each head's running
    /// maximum; a block that raises it first scales the head's running sum and `o` by
    /// `exp(m − m')`, and `o` is divided by the sum at the end (as in `mla::absorbed`). Each
    /// cached key and value is read once per query and kv head, not once per query head.
    fn attend_heads(
        &self,
        q: &[f32],
        t: usize,
        start_pos: usize,
        heads: Range<usize>,
        cache: &KvHeads,
        out: &mut [f32],
    ) {
        let (n, d) = (self.n_heads, self.head_dim);
        let nh = heads.len();
        assert_eq!(out.len(), t * nh * d, "attend_heads: output length");
        with_local(&ATTEND, |s| {
            let AttendScratch { scores, running } = s;
            for i in 0..t {
                let pos = start_pos + i;
                let first = match self.window {
                    Some(w) => (pos + 1).saturating_sub(w),
                    None => 0,
                };
                let q = &q[i * n * d..(i + 1) * n * d];
                let out = &mut out[i * nh * d..(i + 1) * nh * d];
                out.fill(0.0);
                running.clear();
                running.resize(nh, Running::default());
                self.attend_range(
                    q,
                    heads.clone(),
                    cache,
                    first..pos + 1,
                    scores,
                    out,
                    running,
                );
                for (row, r) in out.chunks_exact_mut(d).zip(running.iter()) {
                    r.finish(row);
                }
            }
        })
    }

    /// All heads of one query `q` (`[n, d]`) at position `start_pos`, the cached positions
    /// split between threads ([`attend_split`]), into `out` `[n, d]`.
    fn attend_split(
        &self,
        q: &[f32],
        start_pos: usize,
        cache: &KvHeads,
        threads: usize,
        out: &mut [f32],
    ) {
        let (n, d) = (self.n_heads, self.head_dim);
        let first = self.window.map_or(0, |w| (start_pos + 1).saturating_sub(w));
        attend_split(
            n,
            d,
            first..start_pos + 1,
            BLOCK,
            threads,
            out,
            |range, o, r| {
                with_local(&ATTEND, |s| {
                    self.attend_range(q, 0..n, cache, range, &mut s.scores, o, r)
                })
            },
        );
    }

    /// The online softmax of one query `q` (`[n, d]`) for a range of heads over the cached
    /// `positions` (block by block from `positions.start`): adds to each head's unnormalised
    /// output (`o` `[heads.len(), d]`) and its [`Running`] state (`running`, one per head).
    /// The heads of one kv head go together: per block one [`gemm_nt`] for their scores and
    /// one [`gemm_nn_streamed`] for their values, on the kv head's own keys and values.
    #[allow(clippy::too_many_arguments)]
    fn attend_range(
        &self,
        q: &[f32],
        heads: Range<usize>,
        cache: &KvHeads,
        positions: Range<usize>,
        scores: &mut Vec<f32>,
        o: &mut [f32],
        running: &mut [Running],
    ) {
        let d = self.head_dim;
        let group = self.n_heads / self.n_kv;
        scores.resize(group.min(heads.len()) * BLOCK, 0.0);
        let mut h0 = heads.start;
        while h0 < heads.end {
            // The range's heads of kv head `kv`.
            let kv = h0 / group;
            let h1 = ((kv + 1) * group).min(heads.end);
            let g = h1 - h0;
            let qg = MatRef::new(&q[h0 * d..h1 * d], g, d, d);
            let (j0, j1) = (h0 - heads.start, h1 - heads.start);
            let (o, running) = (&mut o[j0 * d..j1 * d], &mut running[j0..j1]);
            for b0 in positions.clone().step_by(BLOCK) {
                let w = BLOCK.min(positions.end - b0);
                let keys = MatRef::new(&cache.k[kv][b0 * d..], w, d, d);
                let sc = &mut scores[..g * w];
                gemm_nt(qg, keys, MatMut::new(sc, g, w, w), false);
                for (j, row) in sc.chunks_exact_mut(w).enumerate() {
                    running[j].absorb(row, self.scale, &mut o[j * d..(j + 1) * d]);
                }
                // Values come from memory (the scores read only the keys): streamed.
                let values = MatRef::new(&cache.v[kv][b0 * d..], w, d, d);
                gemm_nn_streamed(
                    MatRef::new(sc, g, w, w),
                    values,
                    MatMut::new(o, g, d, d),
                    true,
                );
            }
            h0 = h1;
        }
    }
}

#[cfg(test)]
mod tests {
    use frugal_formats::config::{Attention, ModelConfig};
    use frugal_formats::DType;

    use super::{GqaAttention, GqaLayout, KvHeads, BLOCK};
    use crate::blocks::linear::tests::{values, Mem};

    const N: usize = 6;
    const N_KV: usize = 2;
    const D: usize = 16;
    const HIDDEN: usize = 32;
    const WINDOW: usize = 300;

    /// The formula of the module docs in f64, one head and query at a time.
    fn naive(
        q: &[f32],
        t: usize,
        start_pos: usize,
        heads: &[usize],
        (k, v): (&[f32], &[f32]),
        window: Option<usize>,
    ) -> Vec<f32> {
        let scale = 1.0 / (D as f64).sqrt();
        let mut out = Vec::new();
        for i in 0..t {
            let pos = start_pos + i;
            let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for &h in heads {
                let kv = h / (N / N_KV);
                let row = |v: &[f32], s: usize| v[(s * N_KV + kv) * D..][..D].to_vec();
                let qh = &q[(i * N + h) * D..][..D];
                let scores: Vec<f64> = (first..=pos)
                    .map(|s| {
                        let k = row(k, s);
                        qh.iter()
                            .zip(&k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let mut o = [0.0f64; D];
                for (s, p) in (first..=pos).zip(&e) {
                    for (o, v) in o.iter_mut().zip(row(v, s)) {
                        *o += p / sum * v as f64;
                    }
                }
                out.extend(o.iter().map(|&v| v as f32));
            }
        }
        out
    }

    /// Grouped heads with an online softmax over blocks of the cache give the formula's
    /// attention: caches of less than, exactly, and several blocks; head ranges that cut a kv
    /// group; several queries whose causal edges fall inside a block; a sliding window whose
    /// start falls inside a block. The keys grow with the position, so later blocks raise the
    /// running maximum and what was summed before is rescaled.
    #[test]
    fn grouped_online_attention_equals_the_formula() {
        let json = format!(
            r#"{{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":10,
            "hidden_size":{HIDDEN},"num_hidden_layers":1,"num_attention_heads":{N},
            "num_key_value_heads":{N_KV},"head_dim":{D},"intermediate_size":8,"use_sliding_window":true,
            "sliding_window":{WINDOW},"max_window_layers":0}}"#
        );
        let cfg = ModelConfig::from_hf_str(&json).unwrap();
        let Attention::Gqa(g) = &cfg.attention else {
            panic!("not GQA")
        };
        let mut m = Mem::default();
        for (seed, name, rows, cols) in [
            (1, "q_proj", N * D, HIDDEN),
            (2, "k_proj", N_KV * D, HIDDEN),
            (3, "v_proj", N_KV * D, HIDDEN),
            (4, "o_proj", HIDDEN, N * D),
        ] {
            let bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect();
            m.put(
                &format!("l.{name}.weight"),
                DType::F32,
                &[rows, cols],
                bytes(values(seed, rows * cols, 0.5)),
            );
            m.put(
                &format!("l.{name}.bias"),
                DType::F32,
                &[rows],
                bytes(vec![0.0; rows]),
            );
        }
        for sliding in [false, true] {
            let layout = GqaLayout {
                hidden: HIDDEN,
                rotary_dim: D,
                sliding,
                eps: 1e-6,
                interleaved: false,
            };
            let attn = GqaAttention::load(&&m, "l", g, layout, 128).unwrap();
            let window = sliding.then_some(WINDOW);
            let cases = [
                (1, 1, 0..N),
                (1, 100, 0..N),
                (1, BLOCK, 0..N),
                (1, BLOCK + 1, 1..5),
                (1, 2 * BLOCK + 188, 0..N),
                (4, BLOCK - 2, 2..N),
            ];
            for (t, len, heads) in cases {
                // `[positions, n_kv, d]`, as the projections produce them.
                let k: Vec<f32> = values(5, len * N_KV * D, 1.0)
                    .chunks_exact(N_KV * D)
                    .enumerate()
                    .flat_map(|(pos, r)| {
                        r.iter()
                            .map(move |v| v * (0.5 + 3.0 * pos as f32 / len as f32))
                    })
                    .collect();
                let v = values(6, len * N_KV * D, 1.0);
                // Appended in two parts, the first one too long and truncated.
                let mut c = KvHeads::new(N_KV, D);
                let cut = len / 2;
                c.append(&k[..(cut + 1) * N_KV * D], &v[..(cut + 1) * N_KV * D]);
                c.truncate(cut);
                c.append(&k[cut * N_KV * D..], &v[cut * N_KV * D..]);
                assert_eq!(c.len(), len);
                let start = len - t;
                let q = values(7 + len, t * N * D, 2.0);
                let hs: Vec<usize> = heads.clone().collect();
                let want = naive(&q, t, start, &hs, (&k, &v), window);
                let mut got = vec![f32::NAN; t * hs.len() * D];
                attn.attend_heads(&q, t, start, heads.clone(), &c, &mut got);
                // The largest difference relative to the largest output.
                let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let rel = |got: &[f32]| {
                    got.iter()
                        .zip(&want)
                        .fold(0.0f32, |a, (g, w)| a.max((g - w).abs()))
                        / scale
                };
                let d = rel(&got);
                assert!(
                    d < 2e-5,
                    "sliding {sliding}, {t} queries over {len} positions, heads {heads:?}: {d}"
                );
                // One query, every head: split by position into shares of whole blocks
                // (with the window, counted from its first position), merged.
                if t != 1 || heads != (0..N) {
                    continue;
                }
                for threads in [1, 2, 3] {
                    let mut got = vec![f32::NAN; N * D];
                    attn.attend_split(&q, start, &c, threads, &mut got);
                    let d = rel(&got);
                    assert!(
                        d < 2e-5,
                        "sliding {sliding}, split over {threads} threads, {len} positions: {d}"
                    );
                }
            }
        }
    }
}
