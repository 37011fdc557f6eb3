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

    /// Calls `$tile::<rows, cols, prefetch>` over 4×4 tiles of `C` (edges: 2 rows, then 1, and
    /// 1 column at a time where fewer than 4 remain; a kv head's 6 query heads are a 4-row
    /// and a 2-row tile, not 4 + 1 + 1, which read each row of `B` three times), band by band of `A` ([`band_rows`]), each band
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
                        let mr = match i1 - i {
                            4.. => 4,
                            2 | 3 => 2,
                            _ => 1,
                        };
                        // SAFETY: rows i..i + mr of A, j..j + nr of B and that tile of C lie
                        // inside the checked views.
                        unsafe {
                            match (mr, nr, i == i0) {
                                (4, 4, true) => $tile::<4, 4, true>(&$a, i, &$b, j, &mut $c, $acc),
                                (4, 4, false) => {
                                    $tile::<4, 4, false>(&$a, i, &$b, j, &mut $c, $acc)
                                }
                                (4, _, _) => $tile::<4, 1, false>(&$a, i, &$b, j, &mut $c, $acc),
                                (2, 4, true) => $tile::<2, 4, true>(&$a, i, &$b, j, &mut $c, $acc),
                                (2, 4, false) => {
                                    $tile::<2, 4, false>(&$a, i, &$b, j, &mut $c, $acc)
                                }
                                (2, _, _) => $tile::<2, 1, false>(&$a, i, &$b, j, &mut $c, $acc),
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
        if MR == 4 && NR == 4 {
            let acc: [[__m512; 4]; 4] = std::array::from_fn(|x| std::array::from_fn(|y| acc[x][y]));
            // SAFETY: AVX-512F is enabled here.
            let sums = unsafe { reduce16_512(&acc) };
            // Lane 4y + x holds the sum of tile row x, column y.
            store_tile(c, i, j, accumulate, |x, y| sums[4 * y + x]);
            return;
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
        if MR == 4 && NR == 4 {
            let acc: [[__m256; 4]; 4] = std::array::from_fn(|x| std::array::from_fn(|y| acc[x][y]));
            // SAFETY: AVX2 is enabled here.
            let sums = unsafe { reduce16_256(&acc) };
            // Vector k, lane 4h + q holds accumulator 8k + 2q + h, i.e. row x = 2k + q / 2,
            // column y = 2(q % 2) + h.
            store_tile(c, i, j, accumulate, |x, y| {
                let (k, q, h) = (x / 2, 2 * (x % 2) + y / 2, y % 2);
                sums[k][4 * h + q]
            });
            return;
        }
        for (x, row) in acc.iter().enumerate() {
            for (y, v) in row.iter().enumerate() {
                let s = tree_sum256(*v);
                let o = &mut c.data[(i + x) * c.ld + j + y];
                *o = if accumulate { *o + s } else { s };
            }
        }
    }

    /// Writes a 4×4 tile of sums (`sum(x, y)`: tile row `x`, column `y`) into `C` at rows `i`,
    /// columns `j`, added to the old values when accumulating.
    #[inline(always)]
    fn store_tile(
        c: &mut MatMut<'_>,
        i: usize,
        j: usize,
        accumulate: bool,
        sum: impl Fn(usize, usize) -> f32,
    ) {
        for x in 0..4 {
            for y in 0..4 {
                let o = &mut c.data[(i + x) * c.ld + j + y];
                *o = if accumulate {
                    *o + sum(x, y)
                } else {
                    sum(x, y)
                };
            }
        }
    }

    /// The 16 accumulators of a 4×4 tile (16 lanes each) summed as the reference's tree (`l +
    /// 8`, `l + 4`, `l + 2`, `l + 1`), all at once: each level adds two vectors' halves
    /// after one shuffle each, so one vector then carries the partial sums of twice as many
    /// accumulators in half as many lanes: 30 shuffles and 15 additions instead of 16
    /// separate trees (about 130 instructions). It matters for short rows: with `k` = 128 (a
    /// GQA head, 8 steps of 16 fused multiply-adds per tile) the 4×4 tiles ran 5–9 % faster in
    /// cache on Zen 4, with `k` = 512 2 %. Each accumulator's lanes are paired exactly as in
    /// its own tree, so every sum is the same. Returns lane `4y + x` = accumulator
    /// `acc[x][y]`.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn reduce16_512(acc: &[[__m512; 4]; 4]) -> [f32; 16] {
        let v: [__m512; 16] = std::array::from_fn(|n| acc[n / 4][n % 4]);
        // Level 1 (l + 8): s[m] = 128-bit chunks (v[2m].c0 + v[2m].c2, v[2m].c1 + v[2m].c3,
        // the same of v[2m + 1]), i.e. lanes 0..8 hold v[2m]'s eight partial sums.
        let s: [__m512; 8] = std::array::from_fn(|m| {
            let (a, b) = (v[2 * m], v[2 * m + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xEE>(a, b),
            )
        });
        // Level 2 (l + 4): chunk c of r[m] = the four partial sums of v[4m + c].
        let r: [__m512; 4] = std::array::from_fn(|m| {
            let (a, b) = (s[2 * m], s[2 * m + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xDD>(a, b),
            )
        });
        // Level 3 (l + 2), inside each chunk c: two lanes each of v[8m + c], v[8m + 4 + c].
        let p: [__m512; 2] = std::array::from_fn(|m| {
            let (a, b) = (r[2 * m], r[2 * m + 1]);
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(a, b),
                _mm512_shuffle_ps::<0xEE>(a, b),
            )
        });
        // Level 4 (l + 1): chunk c = the sums of v[c], v[4 + c], v[8 + c], v[12 + c].
        let f = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(p[0], p[1]),
            _mm512_shuffle_ps::<0xDD>(p[0], p[1]),
        );
        let mut out = [0.0f32; 16];
        // SAFETY: `out` is 16 f32.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), f) };
        out
    }

    /// [`reduce16_512`] for 8-lane accumulators (the tree `l + 4`, `l + 2`, `l + 1`): returns
    /// two vectors, lane `4h + q` of vector `k` = accumulator `8k + 2q + h` (`acc[n / 4][n %
    /// 4]`).
    ///
    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn reduce16_256(acc: &[[__m256; 4]; 4]) -> [[f32; 8]; 2] {
        let v: [__m256; 16] = std::array::from_fn(|n| acc[n / 4][n % 4]);
        // Level 1 (l + 4): halves (v[2m].lo + v[2m].hi, v[2m + 1].lo + v[2m + 1].hi).
        let s: [__m256; 8] = std::array::from_fn(|m| {
            let (a, b) = (v[2 * m], v[2 * m + 1]);
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        });
        // Level 2 (l + 2), inside each half h: two lanes each of v[4m + h], v[4m + 2 + h].
        let r: [__m256; 4] = std::array::from_fn(|m| {
            let (a, b) = (s[2 * m], s[2 * m + 1]);
            _mm256_add_ps(
                _mm256_shuffle_ps::<0x44>(a, b),
                _mm256_shuffle_ps::<0xEE>(a, b),
            )
        });
        // Level 3 (l + 1): half h = the sums of v[8k + h], v[8k + 2 + h], v[8k + 4 + h],
        // v[8k + 6 + h].
        let f: [__m256; 2] = std::array::from_fn(|k| {
            let (a, b) = (r[2 * k], r[2 * k + 1]);
            _mm256_add_ps(
                _mm256_shuffle_ps::<0x88>(a, b),
                _mm256_shuffle_ps::<0xDD>(a, b),
            )
        });
        let mut out = [[0.0f32; 8]; 2];
        for (o, f) in out.iter_mut().zip(f) {
            // SAFETY: `o` is 8 f32.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), f) };
        }
        out
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
            // A kv head's 6 query heads (a 4-row and a 2-row tile), a tail of 2 lanes.
            (6, 11, 130),
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
