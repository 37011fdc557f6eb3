//! The absorbed path ([`MlaPath::Absorbed`](super::MlaPath)): attention over the latents.

use std::cell::RefCell;
use std::ops::Range;

use frugal_kernels::matmul::{gemm_nn, gemm_nt, MatMut, MatRef};
use frugal_kernels::softmax;

use super::{with_local, KvB, LatentCache, MlaAttention, GROUP};

/// [`MlaAttention::attend_absorbed`]'s buffers, kept per thread (the pool's workers each
/// attend their own heads).
#[derive(Debug, Default)]
struct Scratch {
    /// `[t, dn]`: one head's `q_nope` of every query.
    q_nope: Vec<f32>,
    /// `[dn, r_kv]`: `W_UK_h` decoded (joint `kv_b_proj` only).
    w_uk: Vec<f32>,
    /// `[pairs, r_kv]`: every pair's absorbed query.
    q_lat: Vec<f32>,
    /// `[t, r_kv]`: one head's absorbed queries.
    ql: Vec<f32>,
    /// `[pairs, r_kv]`: every pair's attention over the latents.
    o_lat: Vec<f32>,
    /// `[t, r_kv]`: one head's `o_lat` of every query.
    ol_h: Vec<f32>,
    /// `[t, dv]`: one head's output of every query.
    o: Vec<f32>,
    /// `attend_group`'s scores and rope queries.
    scores: Vec<f32>,
    q_rope: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl MlaAttention<'_> {
    /// Writes into `out` the attention outputs `[t, heads.len(), dv]` of a range of heads for `t` queries `q`
    /// (`[t, n, dn + dr]`, rope applied) at positions `start_pos..`, over `cache`.
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
            self.absorbed_in(s, q, t, start_pos, heads, cache, out)
        })
    }

    /// [`MlaAttention::attend_absorbed`] with this thread's buffers `s`.
    #[allow(clippy::too_many_arguments)]
    fn absorbed_in(
        &self,
        s: &mut Scratch,
        q: &[f32],
        t: usize,
        start_pos: usize,
        heads: Range<usize>,
        cache: &LatentCache,
        out: &mut [f32],
    ) {
        let (n, dn, dv, r_kv) = (self.n_heads, self.dn, self.dv, self.r_kv);
        let qk = dn + self.dr;
        let nh = heads.len();
        let pairs = t * nh;
        assert_eq!(out.len(), pairs * dv, "attend_absorbed: output length");
        // Every buffer is overwritten before it is read.
        let Scratch {
            q_nope,
            w_uk,
            q_lat,
            ql,
            o_lat,
            ol_h,
            o,
            scores,
            q_rope,
        } = s;
        q_nope.resize(t * dn, 0.0);
        ql.resize(t * r_kv, 0.0);
        if let KvB::Joint(_) = self.kv_b {
            w_uk.resize(dn * r_kv, 0.0);
        }
        // Absorbed queries of every pair, [pairs, r_kv].
        q_lat.resize(pairs * r_kv, 0.0);
        for (j, h) in heads.clone().enumerate() {
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

        o_lat.resize(pairs * r_kv, 0.0);
        for g0 in (0..pairs).step_by(GROUP) {
            let group = g0..(g0 + GROUP).min(pairs);
            let scratch = (&mut *scores, &mut *q_rope);
            self.attend_group(q, q_lat, group, &heads, start_pos, cache, scratch, o_lat);
        }

        // o_h = W_UV_h o_lat for every query: [t, dv] (plain rows in both layouts).
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

    /// Latent attention outputs `o_lat` (`[pairs, r_kv]`, rows `group` written) of the pairs
    /// `group` (pair `p` is query `p / heads.len()` with head `heads.start + p % heads.len()`;
    /// `q_lat` `[pairs, r_kv]` their absorbed queries). Each cached position is read once for
    /// the whole group: the scores are `Q_lat C^T + Q_rope K_rope^T` ([`gemm_nt`], tiles of
    /// pairs × positions), the value sums one product `P [group, ctx] × C [ctx, r_kv]`
    /// ([`gemm_nn`]), where a pair's probabilities past its own (causal) context are zero.
    /// `scores` and `q_rope` are scratch.
    #[allow(clippy::too_many_arguments)]
    fn attend_group(
        &self,
        q: &[f32],
        q_lat: &[f32],
        group: Range<usize>,
        heads: &Range<usize>,
        start_pos: usize,
        cache: &LatentCache,
        (scores, q_rope): (&mut Vec<f32>, &mut Vec<f32>),
        o_lat: &mut [f32],
    ) {
        let (n, dn, dr, r_kv) = (self.n_heads, self.dn, self.dr, self.r_kv);
        let (qk, nh) = (dn + dr, heads.len());
        let g = group.len();
        // Query i sees positions 0..start_pos + i + 1; the group's last pair sees the most.
        let ctx = |p: usize| start_pos + p / nh + 1;
        let all = ctx(group.end - 1);
        q_rope.clear();
        for p in group.clone() {
            let (i, h) = (p / nh, heads.start + p % nh);
            q_rope.extend_from_slice(&q[(i * n + h) * qk + dn..(i * n + h + 1) * qk]);
        }
        scores.clear();
        // Room for the whole cache's capacity at once: a reserved cache grows the scores
        // once, not again as each step's context gets longer.
        let positions = (cache.latent.capacity() / r_kv.max(1)).max(all);
        scores.reserve(GROUP * positions);
        scores.resize(g * all, 0.0);
        gemm_nt(
            MatRef::new(&q_lat[group.start * r_kv..group.end * r_kv], g, r_kv, r_kv),
            MatRef::new(&cache.latent[..all * r_kv], all, r_kv, r_kv),
            MatMut::new(scores, g, all, all),
            false,
        );
        gemm_nt(
            MatRef::new(q_rope, g, dr, dr),
            MatRef::new(&cache.rope_key[..all * dr], all, dr, dr),
            MatMut::new(scores, g, all, all),
            true,
        );
        for (j, p) in group.clone().enumerate() {
            let row = &mut scores[j * all..(j + 1) * all];
            let (seen, masked) = row.split_at_mut(ctx(p));
            seen.iter_mut().for_each(|x| *x *= self.scale);
            softmax::softmax_inplace(seen);
            masked.fill(0.0);
        }
        gemm_nn(
            MatRef::new(scores, g, all, all),
            MatRef::new(&cache.latent[..all * r_kv], all, r_kv, r_kv),
            MatMut::new(
                &mut o_lat[group.start * r_kv..group.end * r_kv],
                g,
                r_kv,
                r_kv,
            ),
            false,
        );
    }
}
