//! The absorbed path ([`MlaPath::Absorbed`](super::MlaPath)): attention over the latents.
//!
//! Three stages per (query, head) pair: the query absorbs `W_UK_h` ([`absorb_queries`]), the
//! pair attends over the cached latents ([`attend_range`]), and `W_UV_h` maps the result back
//! to the value space ([`expand_values`]). A call either runs all three for a range of heads
//! on one thread (the heads are split between threads: [`MlaAttention::attend_absorbed`]), or,
//! for one query over a deep cache, runs each stage as its own parallel step with the middle
//! one split by cached position ([`MlaAttention::attend_absorbed_split`]).
//!
//! The attention itself is an online softmax over blocks of [`BLOCK`] cached positions, so
//! the cache is read once per call: per pair, the running maximum `m` of its scores so far
//! and the running sum `l` of `exp(score − m)`; a block's scores `Q_lat C_bᵀ + Q_rope K_bᵀ`
//! ([`gemm_nt`]) may raise `m` to `m'`, which first scales `l` and the pair's unnormalised
//! output `o` by `exp(m − m')`; then `l += Σ exp(score − m')` and, while the block's latents
//! are still in L2, `o += exp(scores − m') C_b` ([`gemm_nn`]). At the end `o / l` is
//! `Σ_s softmax(score)_s c_s`. Partial results over disjoint position ranges merge the same
//! way: `o = Σ_c e^{m_c − M} o_c / Σ_c e^{m_c − M} l_c` with `M = max_c m_c`.
//!
//! [`absorb_queries`]: MlaAttention::absorb_queries
//! [`attend_range`]: MlaAttention::attend_range
//! [`expand_values`]: MlaAttention::expand_values

use std::cell::RefCell;
use std::ops::Range;

use frugal_kernels::matmul::{gemm_nn, gemm_nt, MatMut, MatRef};

use super::super::heads::{attend_split, for_head_ranges, Running};
use super::{with_local, KvB, LatentCache, MlaAttention, GROUP};

/// Cached positions per block of [`MlaAttention::attend_range`]: a block's latents (`BLOCK ·
/// r_kv` f32, 256 KiB for `r_kv` = 512) stay in L2 from its scores to its values, and for
/// every group of pairs.
const BLOCK: usize = 128;

/// Cached positions from which one query's attention is split between threads by position
/// ([`MlaAttention::attend_absorbed_split`]) rather than by head. Split by head, every
/// thread reads the whole cache (9.4 MB per layer at 4096 positions for `r_kv` = 512, f32)
/// for a few heads; split by position, each reads its share once for all heads, at the
/// price of two more parallel steps per layer. On the scaled DeepSeek model (8 heads, two
/// threads, the two ways alternated token by token in one process) the attention took
/// 1.04–1.08× as long split at 512 positions, 0.75–1.01× at 1024, 0.66–0.69× at 2048.
pub(super) const SPLIT_MIN_POSITIONS: usize = 1024;

/// The per-head products' buffers.
#[derive(Debug, Default)]
struct HeadScratch {
    /// `[t, dn]`: one head's `q_nope` of every query.
    q_nope: Vec<f32>,
    /// `[dn, r_kv]`: `W_UK_h` decoded (joint `kv_b_proj` only).
    w_uk: Vec<f32>,
    /// `[t, r_kv]`: one head's absorbed queries.
    ql: Vec<f32>,
    /// `[t, r_kv]`: one head's `o_lat` of every query.
    ol_h: Vec<f32>,
    /// `[t, dv]`: one head's output of every query.
    o: Vec<f32>,
}

/// [`MlaAttention::attend_range`]'s buffers.
#[derive(Debug, Default)]
struct AttendScratch {
    /// `[GROUP, BLOCK]`: a group's scores, then probabilities, over one block.
    scores: Vec<f32>,
    /// `[pairs, dr]`: the pairs' rope queries.
    q_rope: Vec<f32>,
}

/// Buffers of the absorbed path, kept per thread (the pool's workers each attend their own
/// heads or positions).
#[derive(Debug, Default)]
struct Scratch {
    heads: HeadScratch,
    attend: AttendScratch,
    /// `[pairs, r_kv]`: every pair's absorbed query.
    q_lat: Vec<f32>,
    /// `[pairs, r_kv]`: every pair's attention over the latents.
    o_lat: Vec<f32>,
    running: Vec<Running>,
}

/// The split path's buffers, on the calling thread.
#[derive(Debug, Default)]
struct SplitScratch {
    /// `[n, r_kv]`: every head's absorbed query.
    q_lat: Vec<f32>,
    /// `[n, r_kv]`: the merged outputs.
    o_lat: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static SPLIT: RefCell<SplitScratch> = RefCell::new(SplitScratch::default());
}

impl MlaAttention<'_> {
    /// Writes into `out` the attention outputs `[t, heads.len(), dv]` of a range of heads for
    /// `t` queries `q` (`[t, n, dn + dr]`, rope applied) at positions `start_pos..`, over
    /// `cache`.
    ///
    /// The per-head products with `W_UK_h^T` and `W_UV_h` run on the weights as stored
    /// ([`Linear::forward_rows`](super::Linear::forward_rows) over the head's rows: quantized
    /// weights use the integer dot kernels, with `q_nope_h` and `o_lat_h` quantized to the
    /// weight's activation format unless exact activations were asked for), so no weight is
    /// dequantized per token. Only `kv_b_proj` (Hugging Face's joint layout, and older GGUF
    /// converters' `attn_kv_b`) stores `W_UK_h` untransposed, so there its rows are decoded to
    /// f32 once per head and call (shared by the call's `t` queries) to fold the queries.
    ///
    /// The (query, head) pairs are numbered `p = i · heads + j` and attended in groups of
    /// [`GROUP`] consecutive pairs (the heads of one query, or consecutive queries of one
    /// head), each tile of 4 pairs reading every cached latent row once.
    pub(super) fn attend_absorbed(
        &self,
        q: &[f32],
        t: usize,
        start_pos: usize,
        heads: Range<usize>,
        cache: &LatentCache,
        out: &mut [f32],
    ) {
        with_local(&SCRATCH, |s| {
            let (r_kv, pairs) = (self.r_kv, t * heads.len());
            assert_eq!(out.len(), pairs * self.dv, "attend_absorbed: output length");
            let Scratch {
                heads: hs,
                attend,
                q_lat,
                o_lat,
                running,
            } = s;
            q_lat.resize(pairs * r_kv, 0.0);
            self.absorb_queries(hs, q, t, heads.clone(), q_lat);
            o_lat.clear();
            o_lat.resize(pairs * r_kv, 0.0);
            running.clear();
            running.resize(pairs, Running::default());
            let all = 0..start_pos + t;
            self.attend_range(
                q, q_lat, &heads, start_pos, cache, all, attend, o_lat, running,
            );
            for (row, r) in o_lat.chunks_exact_mut(r_kv).zip(running.iter()) {
                r.finish(row);
            }
            self.expand_values(hs, o_lat, t, heads, out);
        })
    }

    /// [`MlaAttention::attend_absorbed`] for one query at position `start_pos` and every head,
    /// over a deep cache, in three parallel steps: the heads' absorbed queries (heads split
    /// between threads), the attention (positions split: each thread attends all heads over
    /// its share of the cache), then after merging the shares the heads' `W_UV_h` products
    /// (heads split). Writes `out` `[n, dv]`.
    pub(super) fn attend_absorbed_split(
        &self,
        q: &[f32],
        start_pos: usize,
        cache: &LatentCache,
        threads: usize,
        out: &mut [f32],
    ) {
        let (n, dn, dv, r_kv) = (self.n_heads, self.dn, self.dv, self.r_kv);
        assert_eq!(out.len(), n * dv, "attend_absorbed_split: output length");
        let positions = start_pos + 1;
        with_local(&SPLIT, |sp| {
            let SplitScratch { q_lat, o_lat } = sp;
            q_lat.resize(n * r_kv, 0.0);
            for_head_ranges(n, 1, r_kv, n * dn * r_kv, threads, q_lat, |hs, block| {
                with_local(&SCRATCH, |s| {
                    self.absorb_queries(&mut s.heads, q, 1, hs, block)
                })
            });

            o_lat.resize(n * r_kv, 0.0);
            let q_lat = &*q_lat;
            attend_split(
                n,
                r_kv,
                0..positions,
                BLOCK,
                threads,
                o_lat,
                |range, o, running| {
                    with_local(&SCRATCH, |s| {
                        self.attend_range(
                            q,
                            q_lat,
                            &(0..n),
                            start_pos,
                            cache,
                            range,
                            &mut s.attend,
                            o,
                            running,
                        )
                    })
                },
            );

            let o_lat = &*o_lat;
            for_head_ranges(n, 1, dv, n * dv * r_kv, threads, out, |hs, block| {
                let rows = &o_lat[hs.start * r_kv..hs.end * r_kv];
                with_local(&SCRATCH, |s| {
                    self.expand_values(&mut s.heads, rows, 1, hs, block)
                })
            });
        })
    }

    /// The absorbed queries `q_lat = W_UK_h^T q_nope_h` of `t` queries `q` for a range of
    /// heads, into `q_lat` `[t, heads.len(), r_kv]`.
    fn absorb_queries(
        &self,
        s: &mut HeadScratch,
        q: &[f32],
        t: usize,
        heads: Range<usize>,
        q_lat: &mut [f32],
    ) {
        let (n, dn, dv, r_kv) = (self.n_heads, self.dn, self.dv, self.r_kv);
        let (qk, nh) = (dn + self.dr, heads.len());
        let HeadScratch {
            q_nope, w_uk, ql, ..
        } = s;
        q_nope.resize(t * dn, 0.0);
        ql.resize(t * r_kv, 0.0);
        if let KvB::Joint(_) = self.kv_b {
            w_uk.resize(dn * r_kv, 0.0);
        }
        for (j, h) in heads.enumerate() {
            for (i, dst) in q_nope.chunks_exact_mut(dn).enumerate() {
                dst.copy_from_slice(&q[(i * n + h) * qk..(i * n + h) * qk + dn]);
            }
            // q_lat = W_UK_h^T q_nope for every query: [t, r_kv].
            match &self.kv_b {
                // `k_b` holds W_UK_h^T: r_kv rows of length dn, a plain product.
                KvB::Split { k_b, .. } => {
                    k_b.forward_rows_into(h * r_kv..(h + 1) * r_kv, q_nope, ql)
                }
                KvB::Joint(kv_b) => {
                    let base = h * (dn + dv);
                    kv_b.decode_rows(base..base + dn, w_uk);
                    // [t, dn] × W_UK_h [dn, r_kv].
                    gemm_nn(
                        MatRef::new(q_nope, t, dn, dn),
                        MatRef::new(w_uk, dn, r_kv, r_kv),
                        MatMut::new(ql, t, r_kv, r_kv),
                        false,
                    );
                }
            }
            for (i, row) in ql.chunks_exact(r_kv).enumerate() {
                q_lat[(i * nh + j) * r_kv..(i * nh + j + 1) * r_kv].copy_from_slice(row);
            }
        }
    }

    /// `o_h = W_UV_h o_lat` of `t` queries for a range of heads (`o_lat` `[t, heads.len(),
    /// r_kv]`), into `out` `[t, heads.len(), dv]` (plain rows in both layouts).
    fn expand_values(
        &self,
        s: &mut HeadScratch,
        o_lat: &[f32],
        t: usize,
        heads: Range<usize>,
        out: &mut [f32],
    ) {
        let (dn, dv, r_kv) = (self.dn, self.dv, self.r_kv);
        let nh = heads.len();
        let HeadScratch { ol_h, o, .. } = s;
        ol_h.resize(t * r_kv, 0.0);
        o.resize(t * dv, 0.0);
        for (j, h) in heads.enumerate() {
            for (i, dst) in ol_h.chunks_exact_mut(r_kv).enumerate() {
                dst.copy_from_slice(&o_lat[(i * nh + j) * r_kv..(i * nh + j + 1) * r_kv]);
            }
            match &self.kv_b {
                KvB::Split { v_b, .. } => v_b.forward_rows_into(h * dv..(h + 1) * dv, ol_h, o),
                KvB::Joint(kv_b) => {
                    let base = h * (dn + dv);
                    kv_b.forward_rows_into(base + dn..base + dn + dv, ol_h, o)
                }
            }
            for (i, oh) in o.chunks_exact(dv).enumerate() {
                out[(i * nh + j) * dv..(i * nh + j + 1) * dv].copy_from_slice(oh);
            }
        }
    }

    /// Online-softmax attention (module docs) of the pairs `p < running.len()` (pair `p` is
    /// query `p / heads.len()` with head `heads.start + p % heads.len()`; `q_lat`
    /// `[pairs, r_kv]` their absorbed queries) over the cached positions `positions`, each
    /// pair limited to its causal context: adds to each pair's unnormalised output (`o`
    /// `[pairs, r_kv]`) and its [`Running`] state. Each block of the cache is read from memory
    /// once for all pairs, which go through it in groups of [`GROUP`].
    #[allow(clippy::too_many_arguments)]
    fn attend_range(
        &self,
        q: &[f32],
        q_lat: &[f32],
        heads: &Range<usize>,
        start_pos: usize,
        cache: &LatentCache,
        positions: Range<usize>,
        s: &mut AttendScratch,
        o: &mut [f32],
        running: &mut [Running],
    ) {
        let (n, dn, dr, r_kv) = (self.n_heads, self.dn, self.dr, self.r_kv);
        let (qk, nh, pairs) = (dn + dr, heads.len(), running.len());
        // Query i sees positions 0..start_pos + i + 1.
        let ctx = |p: usize| start_pos + p / nh + 1;
        let AttendScratch { scores, q_rope } = s;
        q_rope.clear();
        for p in 0..pairs {
            let (i, h) = (p / nh, heads.start + p % nh);
            q_rope.extend_from_slice(&q[(i * n + h) * qk + dn..(i * n + h + 1) * qk]);
        }
        scores.resize(GROUP * BLOCK, 0.0);
        for b0 in positions.clone().step_by(BLOCK) {
            let b1 = (b0 + BLOCK).min(positions.end);
            for g0 in (0..pairs).step_by(GROUP) {
                let group = g0..(g0 + GROUP).min(pairs);
                // The group's last pair sees the most; positions past it are not scored.
                let w = b1.min(ctx(group.end - 1)).saturating_sub(b0);
                if w == 0 {
                    continue;
                }
                let g = group.len();
                let latents = MatRef::new(&cache.latent[b0 * r_kv..(b0 + w) * r_kv], w, r_kv, r_kv);
                let sc = &mut scores[..g * w];
                gemm_nt(
                    MatRef::new(&q_lat[g0 * r_kv..group.end * r_kv], g, r_kv, r_kv),
                    latents,
                    MatMut::new(sc, g, w, w),
                    false,
                );
                gemm_nt(
                    MatRef::new(&q_rope[g0 * dr..group.end * dr], g, dr, dr),
                    MatRef::new(&cache.rope_key[b0 * dr..(b0 + w) * dr], w, dr, dr),
                    MatMut::new(sc, g, w, w),
                    true,
                );
                for p in group.clone() {
                    let row = &mut sc[(p - g0) * w..(p - g0 + 1) * w];
                    let (seen, masked) = row.split_at_mut(ctx(p).saturating_sub(b0).min(w));
                    masked.fill(0.0);
                    if seen.is_empty() {
                        continue;
                    }
                    running[p].absorb(seen, self.scale, &mut o[p * r_kv..(p + 1) * r_kv]);
                }
                gemm_nn(
                    MatRef::new(sc, g, w, w),
                    latents,
                    MatMut::new(&mut o[g0 * r_kv..group.end * r_kv], g, r_kv, r_kv),
                    true,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use frugal_formats::config::{Attention, ModelConfig};
    use frugal_formats::DType;

    use super::super::{LatentCache, MlaAttention};
    use super::BLOCK;
    use crate::blocks::linear::tests::{values, Mem};

    const N: usize = 4;
    const DN: usize = 16;
    const DR: usize = 8;
    const DV: usize = 16;
    const R: usize = 32;
    const HIDDEN: usize = 32;

    /// An F32 MLA layer `l` with a plain `q_proj`; `W_UK`/`W_UV` as Hugging Face's joint
    /// `kv_b_proj` or as GGUF's split `k_b`/`v_b`.
    fn layer(split: bool) -> Mem {
        let mut m = Mem::default();
        let mut put = |seed: usize, name: &str, shape: &[usize]| {
            let x = values(seed, shape.iter().product(), 0.5);
            let bytes = x.iter().flat_map(|v| v.to_le_bytes()).collect();
            m.put(&format!("l.{name}.weight"), DType::F32, shape, bytes);
        };
        put(1, "q_proj", &[N * (DN + DR), HIDDEN]);
        put(2, "kv_a_proj_with_mqa", &[R + DR, HIDDEN]);
        put(3, "kv_a_layernorm", &[R]);
        put(4, "o_proj", &[HIDDEN, N * DV]);
        if split {
            put(5, "k_b_proj", &[N * R, DN]);
            put(6, "v_b_proj", &[N * DV, R]);
        } else {
            put(5, "kv_b_proj", &[N * (DN + DV), R]);
        }
        m
    }

    /// `len` cached positions whose latents grow with the position, so that later blocks
    /// hold larger scores and the online softmax has to rescale what it summed before.
    fn cache(len: usize) -> LatentCache {
        let mut latent = values(11, len * R, 1.0);
        for (pos, row) in latent.chunks_exact_mut(R).enumerate() {
            let grow = 0.5 + 2.0 * pos as f32 / len as f32;
            row.iter_mut().for_each(|v| *v *= grow);
        }
        LatentCache {
            latent,
            rope_key: values(12, len * DR, 1.0),
        }
    }

    /// Largest difference relative to the largest reference value.
    fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = got
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        d / scale
    }

    /// The absorbed path's online softmax over blocks of the cache, split by head or by
    /// position, gives the expanded path's attention (which decompresses keys and values and
    /// takes one softmax over the whole context; checked against transformers in
    /// tests/mla_paths.rs): one query over caches of less than, exactly, and several blocks,
    /// on 1 to 3 threads; several queries whose causal edges fall inside blocks; a head range.
    #[test]
    fn online_and_split_attention_equal_the_expanded_path() {
        let json = format!(
            r#"{{"architectures":["DeepseekV2ForCausalLM"],"model_type":"deepseek_v2",
            "vocab_size":10,"hidden_size":{HIDDEN},"num_hidden_layers":1,
            "num_attention_heads":{N},"num_key_value_heads":{N},"intermediate_size":8,
            "q_lora_rank":null,"kv_lora_rank":{R},"qk_nope_head_dim":{DN},
            "qk_rope_head_dim":{DR},"v_head_dim":{DV},"n_shared_experts":1,
            "n_routed_experts":2,"num_experts_per_tok":1,"moe_intermediate_size":8,
            "first_k_dense_replace":1}}"#
        );
        let Attention::Mla(cfg) = ModelConfig::from_hf_str(&json).unwrap().attention else {
            panic!("not MLA")
        };
        for split_layout in [false, true] {
            let m = layer(split_layout);
            let attn = MlaAttention::load(&&m, "l", HIDDEN, &cfg, 0.3, 128).unwrap();
            let what = if split_layout { "k_b/v_b" } else { "kv_b" };
            for len in [1, 100, BLOCK, BLOCK + 1, 300, 5 * BLOCK + 3] {
                let c = cache(len);
                let q = values(7 + len, N * (DN + DR), 4.0);
                let want = attn.attend_expanded(&q, 1, len - 1, 0..N, &c);
                let mut got = vec![f32::NAN; N * DV];
                attn.attend_absorbed(&q, 1, len - 1, 0..N, &c, &mut got);
                let d = rel_diff(&got, &want);
                assert!(d < 2e-5, "{what}, {len} positions, by head: {d}");
                for threads in [1, 2, 3] {
                    let mut got = vec![f32::NAN; N * DV];
                    attn.attend_absorbed_split(&q, len - 1, &c, threads, &mut got);
                    let d = rel_diff(&got, &want);
                    assert!(d < 2e-5, "{what}, {len} positions, {threads} threads: {d}");
                }
            }
            // Five queries at 250..255: query i sees 251 + i positions, the last block cut
            // inside; heads 1..3 only.
            let (t, start) = (5, 2 * BLOCK - 6);
            let c = cache(start + t);
            let q = values(9, t * N * (DN + DR), 4.0);
            let want = attn.attend_expanded(&q, t, start, 1..3, &c);
            let mut got = vec![f32::NAN; t * 2 * DV];
            attn.attend_absorbed(&q, t, start, 1..3, &c, &mut got);
            let d = rel_diff(&got, &want);
            assert!(d < 2e-5, "{what}, {t} queries: {d}");
        }
    }
}
