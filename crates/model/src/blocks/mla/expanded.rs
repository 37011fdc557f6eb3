//! The expanded path ([`MlaPath::Expanded`](super::MlaPath)): keys and values decompressed
//! per head, then attention in the heads' own dimensions.

use std::ops::Range;

use frugal_kernels::matmul::{gemm_nn, MatMut, MatRef};
use frugal_kernels::softmax;

use super::super::products::with_acts_cache;
use super::{KvB, LatentCache, MlaAttention, QE};

impl MlaAttention<'_> {
    /// Attention outputs `[t, heads.len(), dv]` of a range of heads for `t` queries `q`
    /// (`[t, n, dn + dr]`, rope applied) at positions `start_pos..`, over `cache` (holding
    /// `L = start_pos + t` positions).
    ///
    /// Per head, with `C` the `[L, r_kv]` latents:
    ///
    /// ```text
    /// K_hᵀ = [W_UK_h Cᵀ ; k_ropeᵀ]        [dn + dr, L]  (f32 product, W_UK_h decoded once)
    /// V_h  = C W_UV_hᵀ                    [L, dv]       (on the stored weight, like a linear layer)
    /// o_h  = softmax(scale · Q_h K_hᵀ, causal) V_h     in blocks of QE queries
    /// ```
    ///
    /// `W_UK_h` is `k_b`'s `r_kv × dn` block transposed (split layout) or `kv_b_proj`'s first
    /// `dn` rows of the head (joint). Scratch is `O(L (r_kv + dn + dr + dv) + QE · L)` floats
    /// per call, whatever the number of heads.
    pub(super) fn attend_expanded(
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
        let l = start_pos + t;
        let latent = &cache.latent[..l * r_kv];
        let mut out = vec![0.0f32; t * nh * dv];

        // Cᵀ [r_kv, L], shared by the heads; Kᵀ [dn + dr, L] whose last dr rows are the shared
        // rope keys (filled once), the first dn each head's decompressed keys.
        let mut c_t = vec![0.0f32; r_kv * l];
        transpose(latent, l, r_kv, &mut c_t);
        let mut k_t = vec![0.0f32; qk * l];
        transpose(&cache.rope_key[..l * dr], l, dr, &mut k_t[dn * l..]);
        let mut w_uk = vec![0.0f32; dn * r_kv];
        let mut k_b_rows = match self.kv_b {
            KvB::Split { .. } => vec![0.0f32; r_kv * dn],
            KvB::Joint(_) => Vec::new(),
        };
        let mut scores = vec![0.0f32; QE.min(t) * l];

        // V_h = C W_UV_hᵀ runs on the stored rows of W_UV_h, with C quantized to the weight's
        // activation format once for all heads.
        let (v_lin, v_stride, v_offset) = match &self.kv_b {
            KvB::Split { v_b, .. } => (v_b, dv, 0),
            KvB::Joint(kv_b) => (kv_b, dn + dv, dn),
        };
        let mut v = vec![0.0f32; l * dv];
        with_acts_cache(|acts| {
            acts.clear();
            if let Some(f) = v_lin.act_format() {
                acts.prepare(f, latent, r_kv);
            }
            for (j, h) in heads.enumerate() {
                // W_UK_h [dn, r_kv] in f32.
                match &self.kv_b {
                    KvB::Split { k_b, .. } => {
                        k_b.decode_rows(h * r_kv..(h + 1) * r_kv, &mut k_b_rows);
                        transpose(&k_b_rows, r_kv, dn, &mut w_uk);
                    }
                    KvB::Joint(kv_b) => {
                        let base = h * (dn + dv);
                        kv_b.decode_rows(base..base + dn, &mut w_uk);
                    }
                }
                let v_rows = h * v_stride + v_offset..h * v_stride + v_offset + dv;
                v_lin.product_block(acts.acts(v_lin, latent), v_rows, &mut v, dv);
                gemm_nn(
                    MatRef::new(&w_uk, dn, r_kv, r_kv),
                    MatRef::new(&c_t, r_kv, l, l),
                    MatMut::new(&mut k_t[..dn * l], dn, l, l),
                    false,
                );
                for i0 in (0..t).step_by(QE) {
                    let rows = QE.min(t - i0);
                    // The block's last query sees the most positions.
                    let all = start_pos + i0 + rows;
                    let s = &mut scores[..rows * all];
                    gemm_nn(
                        MatRef::new(&q[(i0 * n + h) * qk..], rows, qk, n * qk),
                        MatRef::new(&k_t, qk, all, l),
                        MatMut::new(s, rows, all, all),
                        false,
                    );
                    for (r, row) in s.chunks_exact_mut(all).enumerate() {
                        let (seen, masked) = row.split_at_mut(start_pos + i0 + r + 1);
                        seen.iter_mut().for_each(|x| *x *= self.scale);
                        softmax::softmax_inplace(seen);
                        masked.fill(0.0);
                    }
                    gemm_nn(
                        MatRef::new(s, rows, all, all),
                        MatRef::new(&v[..all * dv], all, dv, dv),
                        MatMut::new(&mut out[(i0 * nh + j) * dv..], rows, dv, nh * dv),
                        false,
                    );
                }
            }
        });
        out
    }
}

/// `dst = srcᵀ`: `src` is `[rows, cols]`, `dst` `[cols, rows]`, both row-major. In tiles, so
/// both sides are read and written a few cache lines at a time.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose: sizes"
    );
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}
