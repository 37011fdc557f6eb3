//! `C = A·Bᵀ` (or `C += A·Bᵀ`) over f32 row-major matrices: every output is the dot product
//! of a row of `A` with a row of `B` (attention scores: queries × cached keys).
//!
//! Each dot product of length `k` runs in `W` lanes (`W` = 16 with AVX-512, 8 otherwise):
//! lane `l` is the fused multiply-add chain over `p ≡ l (mod W)` in order, with the rows
//! padded by zeros to a multiple of `W`; the lanes are then summed as a tree
//! (`l + W/2`, then `l + W/4`, … down to one) and added to 0 (or to `c_ij` when accumulating).
//! [`gemm_nt_scalar`] computes exactly that for a given `W`, so every SIMD variant equals it
//! bit for bit. The SIMD variants hold tiles of 4 rows of `A` × 4 rows of `B` (16 lane
//! accumulators) so each loaded vector serves four dot products.

use super::nn::{MatMut, MatRef};
use crate::cpu::Isa;

/// `C = A·Bᵀ`, or `C += A·Bᵀ` when `accumulate`, on the best available ISA. Panics if the
/// shapes disagree (`A` `m×k`, `B` `n×k`, `C` `m×n`).
pub fn gemm_nt(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) {
    gemm_nt_with(Isa::detect(), a, b, c, accumulate)
}

/// The lane count `W` of [`gemm_nt_with`] on `isa` (the scalar reference's own is 8).
pub fn gemm_nt_lanes(isa: Isa) -> usize {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Vnni) && isa.is_available() {
        return 16;
    }
    let _ = isa;
    8
}

/// [`gemm_nt`] on a given ISA (one this CPU lacks, or one without a variant here, runs the
/// scalar reference with 8 lanes). For tests and benchmarks.
pub fn gemm_nt_with(isa: Isa, a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) {
    assert!(
        a.cols == b.cols && c.rows == a.rows && c.cols == b.rows,
        "gemm_nt: A {}x{}, B {}x{}, C {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.is_available() {
        match isa {
            // SAFETY: the ISA is available (checked above); the views were checked to fit.
            Isa::Avx512 | Isa::Avx512Vnni => {
                return unsafe { x86::gemm_nt_avx512(a, b, c, accumulate) }
            }
            // SAFETY: as above (`Isa::Avx2` includes FMA).
            Isa::Avx2 => return unsafe { x86::gemm_nt_avx2(a, b, c, accumulate) },
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    gemm_nt_scalar::<8>(a, b, c, accumulate)
}

/// The reference with `W` lanes (module docs).
pub fn gemm_nt_scalar<const W: usize>(
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: MatMut<'_>,
    accumulate: bool,
) {
    let k = a.cols;
    for i in 0..c.rows {
        for j in 0..c.cols {
            let (x, y) = (&a.data[i * a.ld..][..k], &b.data[j * b.ld..][..k]);
            let mut lanes = [0.0f32; W];
            for p0 in (0..k).step_by(W) {
                for (l, acc) in lanes.iter_mut().enumerate() {
                    let p = p0 + l;
                    let (u, v) = if p < k { (x[p], y[p]) } else { (0.0, 0.0) };
                    *acc = u.mul_add(v, *acc);
                }
            }
            let mut w = W;
            while w > 1 {
                w /= 2;
                for l in 0..w {
                    lanes[l] += lanes[l + w];
                }
            }
            let o = &mut c.data[i * c.ld + j];
            *o = if accumulate { *o + lanes[0] } else { lanes[0] };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MatMut, MatRef};
    use std::arch::x86_64::*;

    /// Rows of `A` whose tiles meet each tile of `B` in turn: as many as fit in 32 KiB
    /// (whole tiles of 4), so a band of `A` stays in L1 while all of `B` passes once per band.
    /// Decode's 8 (query, head) pairs against a deep cache are one band: each cached latent
    /// row is read once, not once per tile of 4 pairs (a 1024-position cache, 2.3 MB, does not
    /// fit in L2 for a second pass).
    fn band_rows(k: usize) -> usize {
        ((32 << 10) / (4 * k.max(1)) / 4 * 4).max(4)
    }

    /// Calls `$tile::<rows, cols, prefetch>` over 4×4 tiles of `C` (edges: 1 row or 1 column
    /// at a time where fewer than 4 remain), band by band of `A` ([`band_rows`]), each band
    /// meeting `B` tile by tile. A band's first row of tiles prefetches `B` ahead.
    macro_rules! tiles {
        ($a:ident, $b:ident, $c:ident, $acc:ident, $tile:ident) => {{
            let (m, n) = ($c.rows, $c.cols);
            let band = band_rows($a.cols);
            let mut i0 = 0;
            while i0 < m {
                let i1 = (i0 + band).min(m);
                let mut j = 0;
                while j < n {
                    let nr = if n - j >= 4 { 4 } else { 1 };
                    let mut i = i0;
                    while i < i1 {
                        let mr = if i1 - i >= 4 { 4 } else { 1 };
                        // SAFETY: rows i..i + mr of A, j..j + nr of B and that tile of C lie
                        // inside the checked views.
                        unsafe {
                            match (mr, nr, i == i0) {
                                (4, 4, true) => $tile::<4, 4, true>(&$a, i, &$b, j, &mut $c, $acc),
                                (4, 4, false) => {
                                    $tile::<4, 4, false>(&$a, i, &$b, j, &mut $c, $acc)
                                }
                                (4, _, _) => $tile::<4, 1, false>(&$a, i, &$b, j, &mut $c, $acc),
                                (_, 4, true) => $tile::<1, 4, true>(&$a, i, &$b, j, &mut $c, $acc),
                                (_, 4, false) => {
                                    $tile::<1, 4, false>(&$a, i, &$b, j, &mut $c, $acc)
                                }
                                _ => $tile::<1, 1, false>(&$a, i, &$b, j, &mut $c, $acc),
                            }
                        }
                        i += mr;
                    }
                    j += nr;
                }
                i0 = i1;
            }
        }};
    }

    /// AVX-512, 16 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; the views must fit their slices and agree in shape.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn gemm_nt_avx512(
        a: MatRef<'_>,
        b: MatRef<'_>,
        mut c: MatMut<'_>,
        acc: bool,
    ) {
        tiles!(a, b, c, acc, tile512);
    }

    /// Rows of `B` ahead of the tile that the first row of tiles prefetches: one tile for long
    /// rows, more for short ones (rope keys), so a prefetch is issued well before its use.
    ///
    /// Why: decode scores a few queries against a cache that the layer's weights, streamed
    /// since this layer last ran, have pushed out to DRAM. The first pass over `B` then waits
    /// on every line; the hardware prefetchers do not follow four interleaved row streams
    /// that each end after a few lines.
    #[inline(always)]
    fn rows_ahead(k: usize) -> usize {
        if k >= 256 {
            4
        } else {
            16
        }
    }

    /// Prefetches, into L2, the line at column `p` of the `NR` rows of `B` that the tile
    /// [`rows_ahead`] rows on will read (addresses past `B` are harmless: a prefetch never
    /// faults, and `wrapping_add` makes no claim on the allocation).
    ///
    /// Why L2 (`T1`) and not L1 (`T0`): a prefetch into L1 holds one of the core's few L1
    /// miss slots until its line arrives from DRAM, the same slots the tile's own loads need.
    /// Into L2, whose miss queue is deeper, more lines are in flight, and a tile's load then
    /// hits L2. The `mla gemm_nt scores cold` benchmark row (decode's 8 queries against 27
    /// layers' 4096-latent caches, from DRAM, one Zen 4 thread): 24.7 ms with `T0`, 17.3
    /// with `T1` (AVX2: 26.5 → 21.2); 16 rows ahead instead of 4 changed nothing beyond noise
    /// with either hint. In cache, unchanged.
    #[inline(always)]
    fn prefetch_b<const NR: usize>(bp: *const f32, ld: usize, j: usize, k: usize, p: usize) {
        let ahead = rows_ahead(k);
        for y in 0..NR {
            let at = bp.wrapping_add((j + ahead + y) * ld + p);
            // SAFETY: SSE is part of x86-64; a prefetch reads nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(at.cast()) };
        }
    }

    /// One `MR × NR` tile of `C` at rows `i`, columns `j`; with `PF`, prefetching `B` ahead.
    ///
    /// # Safety
    /// AVX-512F + FMA; rows `i..i + MR` of `a`, `j..j + NR` of `b` and the tile of `c` exist.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn tile512<const MR: usize, const NR: usize, const PF: bool>(
        a: &MatRef<'_>,
        i: usize,
        b: &MatRef<'_>,
        j: usize,
        c: &mut MatMut<'_>,
        accumulate: bool,
    ) {
        let k = a.cols;
        let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        // SAFETY (whole body): p + 16 ≤ k for the unmasked loads, the tail is masked.
        unsafe {
            let mut p = 0;
            while p < k {
                let mask: __mmask16 = if k - p >= 16 {
                    0xffff
                } else {
                    ((1u32 << (k - p)) - 1) as __mmask16
                };
                if PF {
                    prefetch_b::<NR>(bp, b.ld, j, k, p);
                }
                let bv: [__m512; NR] = std::array::from_fn(|y| {
                    _mm512_maskz_loadu_ps(mask, bp.add((j + y) * b.ld + p))
                });
                for (x, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_maskz_loadu_ps(mask, ap.add((i + x) * a.ld + p));
                    for (o, bv) in row.iter_mut().zip(&bv) {
                        *o = _mm512_fmadd_ps(av, *bv, *o);
                    }
                }
                p += 16;
            }
        }
        for (x, row) in acc.iter().enumerate() {
            for (y, v) in row.iter().enumerate() {
                // The tree's first level: lane l + lane l + 8.
                let v8 = _mm256_add_ps(
                    _mm512_castps512_ps256(*v),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*v))),
                );
                let s = tree_sum256(v8);
                let o = &mut c.data[(i + x) * c.ld + j + y];
                *o = if accumulate { *o + s } else { s };
            }
        }
    }

    /// AVX2, 8 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the views must fit their slices and agree in shape.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_nt_avx2(a: MatRef<'_>, b: MatRef<'_>, mut c: MatMut<'_>, acc: bool) {
        tiles!(a, b, c, acc, tile256);
    }

    /// One `MR × NR` tile of `C` at rows `i`, columns `j`; with `PF`, prefetching `B` ahead.
    ///
    /// # Safety
    /// AVX2 + FMA; as [`tile512`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile256<const MR: usize, const NR: usize, const PF: bool>(
        a: &MatRef<'_>,
        i: usize,
        b: &MatRef<'_>,
        j: usize,
        c: &mut MatMut<'_>,
        accumulate: bool,
    ) {
        let k = a.cols;
        let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); NR]; MR];
        // SAFETY (whole body): p + 8 ≤ k for the full loads, the tail is masked.
        unsafe {
            let mut p = 0;
            while p < k {
                let left = (k - p).min(8) as i32;
                let mask = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(left),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                // One prefetch per 64-byte line: every other step of 8 floats.
                if PF && p % 16 == 0 {
                    prefetch_b::<NR>(bp, b.ld, j, k, p);
                }
                let bv: [__m256; NR] =
                    std::array::from_fn(|y| _mm256_maskload_ps(bp.add((j + y) * b.ld + p), mask));
                for (x, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_maskload_ps(ap.add((i + x) * a.ld + p), mask);
                    for (o, bv) in row.iter_mut().zip(&bv) {
                        *o = _mm256_fmadd_ps(av, *bv, *o);
                    }
                }
                p += 8;
            }
        }
        for (x, row) in acc.iter().enumerate() {
            for (y, v) in row.iter().enumerate() {
                let s = tree_sum256(*v);
                let o = &mut c.data[(i + x) * c.ld + j + y];
                *o = if accumulate { *o + s } else { s };
            }
        }
    }

    /// The 8 lanes of `v` summed as the reference's tree: `l + 4`, then `l + 2`, then `l + 1`
    /// (in registers; f32 addition is commutative, so operand order does not matter).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn tree_sum256(v: __m256) -> f32 {
        let v4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
        let v1 = _mm_add_ss(v2, _mm_shuffle_ps::<0b01>(v2, v2));
        _mm_cvtss_f32(v1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Every ISA equals the reference with its lane count bit for bit (tiles, edges, tails,
    /// strides, accumulation); the reference is checked against an f64 sum.
    #[test]
    fn every_isa_equals_the_reference() {
        for &(m, n, k) in &[
            (1usize, 1usize, 1usize),
            (3, 5, 7),
            (4, 4, 16),
            (7, 9, 33),
            (8, 513, 512),
            (5, 6, 64),
            (2, 3, 0),
        ] {
            let (lda, ldb, ldc) = (k + 3, k + 1, n + 2);
            let a = values(m * lda, 1);
            let b = values(n * ldb, 2);
            let c0 = values(m * ldc, 3);
            for accumulate in [false, true] {
                let reference = |w: usize| {
                    let mut want = c0.clone();
                    let (a, b) = (MatRef::new(&a, m, k, lda), MatRef::new(&b, n, k, ldb));
                    let c = MatMut::new(&mut want, m, n, ldc);
                    match w {
                        16 => gemm_nt_scalar::<16>(a, b, c, accumulate),
                        _ => gemm_nt_scalar::<8>(a, b, c, accumulate),
                    }
                    want
                };
                let want8 = reference(8);
                for i in 0..m {
                    for j in 0..n {
                        let mut e = if accumulate {
                            c0[i * ldc + j] as f64
                        } else {
                            0.0
                        };
                        for p in 0..k {
                            e += a[i * lda + p] as f64 * b[j * ldb + p] as f64;
                        }
                        let d = (want8[i * ldc + j] as f64 - e).abs();
                        assert!(d < 1e-4, "reference {m}x{n}x{k}");
                    }
                }
                for isa in Isa::available() {
                    let mut got = c0.clone();
                    gemm_nt_with(
                        isa,
                        MatRef::new(&a, m, k, lda),
                        MatRef::new(&b, n, k, ldb),
                        MatMut::new(&mut got, m, n, ldc),
                        accumulate,
                    );
                    let want = reference(gemm_nt_lanes(isa));
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{isa} {m}x{n}x{k} accumulate {accumulate}");
                }
            }
        }
    }
}
