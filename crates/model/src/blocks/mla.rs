//! Multi-head latent attention (DeepSeek-V2 §2.1) with the compressed cache and absorbed
//! projections.
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

use std::ops::Range;

use frugal_formats::config::MlaConfig;
use frugal_kernels::{matmul, norm, rope, softmax};

use super::heads::for_head_ranges;
use super::linear::{load_f32_vec, Linear, Weights};
use super::products::forward_many;
use super::rope::RopeTable;
use super::SeqSpan;
use crate::ModelError;

/// Queries attended together in prefill (sharing each read of a cached latent).
const QB: usize = 4;

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
    /// `rope_cs` holds each row's cos/sin ([`RopeTable::cos_sin`]). Projections run once over
    /// all rows; attention runs per sequence over its own cache. Returns `[T, hidden]`.
    pub fn forward(
        &self,
        x: &[f32],
        spans: &mut [SeqSpan<'_, LatentCache>],
        rope_table: &RopeTable,
        rope_cs: &[(Vec<f32>, Vec<f32>)],
        threads: usize,
    ) -> Vec<f32> {
        let (n, dn, dr, dv, r_kv) = (self.n_heads, self.dn, self.dr, self.dv, self.r_kv);
        let qk = dn + dr;
        let interleaved = rope_table.interleaved();

        // Queries [T, n, dn + dr] and the latent with the shared rope key [T, r_kv + dr]: the
        // two products of x run as one parallel step over one quantization of x.
        let t = x.len() / self.kv_a.cols();
        let mut kv = vec![0.0f32; t * (r_kv + dr)];
        let mut q = match &self.q {
            QProj::LowRank { a, norm: w, b } => {
                let mut qa = vec![0.0f32; t * a.rows()];
                forward_many(
                    &[a, &self.kv_a],
                    x,
                    &mut [&mut qa[..], &mut kv[..]],
                    threads,
                );
                for row in qa.chunks_exact_mut(a.rows()) {
                    norm::rmsnorm_inplace(row, w, LATENT_NORM_EPS);
                }
                b.forward(&qa, threads)
            }
            QProj::Direct(p) => {
                let mut q = vec![0.0f32; t * p.rows()];
                forward_many(&[p, &self.kv_a], x, &mut [&mut q[..], &mut kv[..]], threads);
                q
            }
        };

        // Latents and rope keys → each sequence's cache.
        let mut rows = kv.chunks_exact(r_kv + dr).enumerate();
        for span in spans.iter_mut() {
            for (i, row) in rows.by_ref().take(span.len) {
                let (cos, sin) = &rope_cs[i];
                let mut c = row[..r_kv].to_vec();
                norm::rmsnorm_inplace(&mut c, &self.kv_norm, LATENT_NORM_EPS);
                let mut k = row[r_kv..].to_vec();
                rope::rope_inplace(&mut k, cos, sin, interleaved);
                span.cache.latent.extend_from_slice(&c);
                span.cache.rope_key.extend_from_slice(&k);
                for h in 0..n {
                    let qr = &mut q[(i * n + h) * qk + dn..(i * n + h + 1) * qk];
                    rope::rope_inplace(qr, cos, sin, interleaved);
                }
            }
        }

        // Per sequence and head: absorb W_UK_h into the query, attend over latents, apply
        // W_UV_h. Heads are independent: split them over threads when there is enough work.
        let mut heads_out = Vec::with_capacity(q.len() / qk * dv);
        let mut row = 0;
        for span in spans.iter() {
            let (t, start_pos) = (span.len, span.start_pos);
            let qs = &q[row * n * qk..(row + t) * n * qk];
            // Attention over the cache plus the per-head W_UK / W_UV products.
            let work = n * t * ((start_pos + t) * (r_kv + dr) + (dn + dv) * r_kv);
            let cache: &LatentCache = span.cache;
            heads_out.extend(for_head_ranges(n, t, dv, work, threads, |heads| {
                self.attend_heads(qs, t, start_pos, heads, cache)
            }));
            row += t;
        }
        self.o.forward(&heads_out, threads)
    }

    /// Attention outputs `[t, heads.len(), dv]` of a range of heads for `t` queries `q`
    /// (`[t, n, dn + dr]`, rope applied) at positions `start_pos..`, over `cache`.
    ///
    /// The per-head products with `W_UK_h^T` and `W_UV_h` run on the weights as stored
    /// ([`Linear::forward_rows`] over the head's rows: quantized weights use the integer dot
    /// kernels, with `q_nope_h` and `o_lat_h` quantized to the weight's activation format
    /// unless exact activations were asked for), so no weight is dequantized per token.
    /// Only `kv_b_proj` (Hugging Face's joint layout, and older GGUF converters' `attn_kv_b`)
    /// stores `W_UK_h` untransposed, so there its rows are decoded to f32 once per head and
    /// call (shared by the call's `t` queries) to fold the queries.
    fn attend_heads(
        &self,
        q: &[f32],
        t: usize,
        start_pos: usize,
        heads: Range<usize>,
        cache: &LatentCache,
    ) -> Vec<f32> {
        let (n, dn, dr, dv, r_kv) = (self.n_heads, self.dn, self.dr, self.dv, self.r_kv);
        let qk = dn + dr;
        let nh = heads.len();
        let mut out = vec![0.0f32; t * nh * dv];
        let mut q_nope = vec![0.0f32; t * dn];
        let mut o_lat = vec![0.0f32; t * r_kv];
        let mut w_uk = match self.kv_b {
            KvB::Joint(_) => vec![0.0f32; dn * r_kv],
            KvB::Split { .. } => Vec::new(),
        };
        let mut scores = Vec::with_capacity(start_pos + t);
        for (j, h) in heads.enumerate() {
            for (i, dst) in q_nope.chunks_exact_mut(dn).enumerate() {
                dst.copy_from_slice(&q[(i * n + h) * qk..(i * n + h) * qk + dn]);
            }
            // q_lat = W_UK_h^T q_nope for every query: [t, r_kv].
            let q_lat = match &self.kv_b {
                // `k_b` holds W_UK_h^T: r_kv rows of length dn, a plain product.
                KvB::Split { k_b, .. } => k_b.forward_rows(h * r_kv..(h + 1) * r_kv, &q_nope),
                KvB::Joint(kv_b) => {
                    let base = h * (dn + dv);
                    kv_b.decode_rows(base..base + dn, &mut w_uk);
                    let mut q_lat = vec![0.0f32; t * r_kv];
                    for (qn, ql) in q_nope.chunks_exact(dn).zip(q_lat.chunks_exact_mut(r_kv)) {
                        for (d, row) in w_uk.chunks_exact(r_kv).enumerate() {
                            matmul::axpy(qn[d], row, ql);
                        }
                    }
                    q_lat
                }
            };
            // Queries in blocks of QB share each read of a cached latent (prefill); the rest
            // one at a time. Each query's scores, softmax and sum are computed exactly as
            // alone: `dot_n` / `axpy_n` equal `dot` / `axpy` per row.
            let blocks = t / QB;
            for b in 0..blocks {
                let i0 = b * QB;
                self.attend_block(q, &q_lat, h, i0, start_pos, cache, &mut scores, &mut o_lat);
            }
            for i in blocks * QB..t {
                let q_rope = &q[(i * n + h) * qk + dn..(i * n + h + 1) * qk];
                let ql = &q_lat[i * r_kv..(i + 1) * r_kv];
                // Causal: token i sees every cached position up to its own.
                let ctx = start_pos + i + 1;
                scores.clear();
                scores.extend((0..ctx).map(|s| {
                    let c = &cache.latent[s * r_kv..(s + 1) * r_kv];
                    let k = &cache.rope_key[s * dr..(s + 1) * dr];
                    (matmul::dot(ql, c) + matmul::dot(q_rope, k)) * self.scale
                }));
                softmax::softmax_inplace(&mut scores);
                let ol = &mut o_lat[i * r_kv..(i + 1) * r_kv];
                ol.iter_mut().for_each(|v| *v = 0.0);
                for (s, &p) in scores.iter().enumerate() {
                    matmul::axpy(p, &cache.latent[s * r_kv..(s + 1) * r_kv], ol);
                }
            }
            // o_h = W_UV_h o_lat for every query: [t, dv] (plain rows in both layouts).
            let o = match &self.kv_b {
                KvB::Split { v_b, .. } => v_b.forward_rows(h * dv..(h + 1) * dv, &o_lat),
                KvB::Joint(kv_b) => {
                    let base = h * (dn + dv);
                    kv_b.forward_rows(base + dn..base + dn + dv, &o_lat)
                }
            };
            for (i, oh) in o.chunks_exact(dv).enumerate() {
                out[(i * nh + j) * dv..(i * nh + j + 1) * dv].copy_from_slice(oh);
            }
        }
        out
    }

    /// Latent attention outputs `o_lat` (`[t, r_kv]`, rows `i0..i0 + QB` written) of head `h`
    /// for the QB queries `i0..i0 + QB` (`q_lat` `[t, r_kv]` their absorbed queries), reading
    /// each cached position once for the whole block. `scores` is scratch.
    #[allow(clippy::too_many_arguments)]
    fn attend_block(
        &self,
        q: &[f32],
        q_lat: &[f32],
        h: usize,
        i0: usize,
        start_pos: usize,
        cache: &LatentCache,
        scores: &mut Vec<f32>,
        o_lat: &mut [f32],
    ) {
        let (n, dn, dr, r_kv) = (self.n_heads, self.dn, self.dr, self.r_kv);
        let qk = dn + dr;
        let ql: [&[f32]; QB] =
            std::array::from_fn(|j| &q_lat[(i0 + j) * r_kv..(i0 + j + 1) * r_kv]);
        let qr: [&[f32]; QB] = std::array::from_fn(|j| {
            let i = i0 + j;
            &q[(i * n + h) * qk + dn..(i * n + h + 1) * qk]
        });
        // Query i0 + j sees positions 0..ctx(j); the last block rows only some queries see.
        let ctx = |j: usize| start_pos + i0 + j + 1;
        let (common, all) = (ctx(0), ctx(QB - 1));
        scores.clear();
        scores.resize(QB * all, 0.0);
        for s in 0..all {
            let c = &cache.latent[s * r_kv..(s + 1) * r_kv];
            let k = &cache.rope_key[s * dr..(s + 1) * dr];
            let (dc, dk) = (matmul::dot_n(ql, c), matmul::dot_n(qr, k));
            for j in 0..QB {
                scores[j * all + s] = (dc[j] + dk[j]) * self.scale;
            }
        }
        for j in 0..QB {
            softmax::softmax_inplace(&mut scores[j * all..j * all + ctx(j)]);
        }
        let block = &mut o_lat[i0 * r_kv..(i0 + QB) * r_kv];
        block.iter_mut().for_each(|v| *v = 0.0);
        let mut rows = block.chunks_exact_mut(r_kv);
        let mut ol: [&mut [f32]; QB] =
            // OK because `block` is exactly QB rows.
            std::array::from_fn(|_| rows.next().expect("QB rows"));
        for s in 0..common {
            let p: [f32; QB] = std::array::from_fn(|j| scores[j * all + s]);
            let c = &cache.latent[s * r_kv..(s + 1) * r_kv];
            matmul::axpy_n(p, c, ol.each_mut().map(|r| &mut **r));
        }
        for s in common..all {
            let c = &cache.latent[s * r_kv..(s + 1) * r_kv];
            for (j, o) in ol.iter_mut().enumerate() {
                if s < ctx(j) {
                    matmul::axpy(scores[j * all + s], c, o);
                }
            }
        }
    }
}
