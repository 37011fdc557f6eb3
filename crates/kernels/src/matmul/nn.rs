//! `C = A·B` (or `C += A·B`) over f32 row-major matrices with `B` untransposed ("NN"): the
//! register-blocked product behind MLA's attention (decompressing keys from the latent cache,
//! `P·V`, `P·C` for several heads at once).
//!
//! Every output is one fused multiply-add chain over `p = 0..k` in order,
//! `c_ij ← fma(a_ip, b_pj, c_ij)`, starting from 0 (or from `c_ij` when accumulating). The SIMD
//! variants compute exactly that chain per lane, so they equal the scalar reference
//! ([`gemm_nn_scalar`], `f32::mul_add`) bit for bit; they only change how many outputs are in
//! flight: a micro-tile of `MR` rows × `NV` vectors of columns is held in registers while `k`
//! runs, so each loaded row of `B` serves `MR` rows of `A` and each broadcast `a_ip` serves
//! `NV` vectors. Column tails use masked loads and stores.

use crate::cpu::Isa;

/// A row-major f32 matrix view: element `(r, c)` is `data[r * ld + c]` (`ld ≥ cols`).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The elements (at least `(rows - 1) * ld + cols` of them).
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between the starts of two rows.
    pub ld: usize,
}

/// A mutable row-major f32 matrix view, laid out as [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The elements (at least `(rows - 1) * ld + cols` of them).
    pub data: &'a mut [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between the starts of two rows.
    pub ld: usize,
}

/// Whether `len` elements hold a `rows × cols` view with row stride `ld`.
fn fits(len: usize, rows: usize, cols: usize, ld: usize) -> bool {
    cols <= ld && (rows == 0 || cols == 0 || (rows - 1) * ld + cols <= len)
}

impl<'a> MatRef<'a> {
    /// A view of `data` as `rows × cols` with row stride `ld`. Panics if it does not fit.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, ld),
            "MatRef: {rows}x{cols} (ld {ld}) does not fit {}",
            data.len()
        );
        MatRef {
            data,
            rows,
            cols,
            ld,
        }
    }
}

impl<'a> MatMut<'a> {
    /// A view of `data` as `rows × cols` with row stride `ld`. Panics if it does not fit.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, ld),
            "MatMut: {rows}x{cols} (ld {ld}) does not fit {}",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            ld,
        }
    }
}

/// `C = A·B`, or `C += A·B` when `accumulate`, on the best available ISA ([`Isa::detect`]).
/// Panics if the shapes disagree (`A` `m×k`, `B` `k×n`, `C` `m×n`).
pub fn gemm_nn(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) {
    gemm_nn_with(Isa::detect(), a, b, c, accumulate)
}

/// [`gemm_nn`] for a `B` read once from memory (not already in cache): while the first panel
/// of columns passes, each whole row of `B` a few KiB ahead is prefetched into L2, so the
/// later panels find it there. Plain [`gemm_nn`] takes `B` panel by panel, a few lines of
/// every row at a time, which from DRAM the hardware prefetchers do not follow: decode's
/// `P·V` over a GQA cache (6 rows of `P`, 256 positions of 128 values, 28 layers of 4096
/// positions, one Zen 4 thread) ran at 8.6–9.3 GB/s, and at 11.6–12.1 GB/s prefetched; with
/// the scores, the whole attention took 8.7–9.3 ms instead of 10.5–11.6; in cache it costs
/// about 3%. In the model (Qwen2-1.5B at 4096 positions, `frugal bench --profile`, binaries
/// alternated) the attention step took 19.9–21.4 ms per token instead of 23.0–24.1 on one
/// thread, 12.0–12.2 instead of 12.5–12.6 on two. The `gqa gemm_nn values cold` bench rows
/// (the products alone): AVX-512 5.7–6.2 ms → 4.3–4.5, AVX2 7.5–7.8 → 4.6–4.8. Same results as
/// [`gemm_nn`], bit for bit.
pub fn gemm_nn_streamed(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) {
    gemm_nn_impl(Isa::detect(), a, b, c, accumulate, true)
}

/// [`gemm_nn`] on a given ISA (one this CPU lacks, or one without a variant here, runs the
/// scalar reference). For tests and benchmarks.
pub fn gemm_nn_with(isa: Isa, a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) {
    gemm_nn_impl(isa, a, b, c, accumulate, false)
}

/// [`gemm_nn_streamed`] on a given ISA. For tests and benchmarks.
pub fn gemm_nn_streamed_with(
    isa: Isa,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: MatMut<'_>,
    accumulate: bool,
) {
    gemm_nn_impl(isa, a, b, c, accumulate, true)
}

fn gemm_nn_impl(
    isa: Isa,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: MatMut<'_>,
    accumulate: bool,
    stream: bool,
) {
    assert!(
        a.cols == b.rows && c.rows == a.rows && c.cols == b.cols,
        "gemm_nn: A {}x{}, B {}x{}, C {}x{}",
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
                return unsafe { x86::gemm_avx512(a, b, c, accumulate, stream) }
            }
            // SAFETY: as above (`Isa::Avx2` includes FMA).
            Isa::Avx2 => return unsafe { x86::gemm_avx2(a, b, c, accumulate, stream) },
            _ => {}
        }
    }
    let _ = (isa, stream);
    gemm_nn_scalar(a, b, c, accumulate)
}

/// The reference: one `mul_add` chain over `p` per output.
pub fn gemm_nn_scalar(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>, accumulate: bool) {
    let k = a.cols;
    for i in 0..c.rows {
        for j in 0..c.cols {
            let o = &mut c.data[i * c.ld + j];
            let mut acc = if accumulate { *o } else { 0.0 };
            for p in 0..k {
                acc = a.data[i * a.ld + p].mul_add(b.data[p * b.ld + j], acc);
            }
            *o = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MatMut, MatRef};
    use std::arch::x86_64::*;

    /// Splits the rows into blocks of `MR` (then 4, 2, 1 for the rest) and the columns into
    /// panels of `NV` vectors of `W` lanes (then single vectors, the last one masked), calling
    /// `$kernel::<rows, vectors>` on each tile. Panels are the outer loop: a panel of `B`
    /// (`k × NV·W`) stays in cache while every row block of `A` passes over it.
    macro_rules! tiles {
        ($a:ident, $b:ident, $c:ident, $acc:ident, $stream:ident, $w:expr, $mr:expr, $nv:expr, $kernel:ident, $mask:ident) => {{
            let (m, n, k) = ($c.rows, $c.cols, $a.cols);
            let (ap, bp, cp) = ($a.data.as_ptr(), $b.data.as_ptr(), $c.data.as_mut_ptr());
            let mut j = 0;
            while j < n {
                let width = (n - j).min($nv * $w);
                let nv = width.div_ceil($w);
                let mask = $mask(width - (nv - 1) * $w);
                let mut i = 0;
                while i < m {
                    let rows = m - i;
                    // SAFETY: rows i.., columns j..j + width lie inside the checked views;
                    // lanes past `width` are masked.
                    unsafe {
                        let (a, b, c) = (ap.add(i * $a.ld), bp.add(j), cp.add(i * $c.ld + j));
                        let (la, lb, lc) = ($a.ld, $b.ld, $c.ld);
                        // Streamed: the first tile prefetches whole rows of B
                        // ([`prefetch_row`]) for the panels after it.
                        let pf = if $stream && i == 0 && j == 0 { n } else { 0 };
                        let step = match (rows >= $mr, rows >= 4, rows >= 2, nv == $nv) {
                            (true, _, _, true) => {
                                $kernel::<$mr, $nv>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                $mr
                            }
                            (true, _, _, false) => {
                                $kernel::<$mr, 1>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                $mr
                            }
                            (_, true, _, true) => {
                                $kernel::<4, $nv>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                4
                            }
                            (_, true, _, false) => {
                                $kernel::<4, 1>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                4
                            }
                            (_, _, true, true) => {
                                $kernel::<2, $nv>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                2
                            }
                            (_, _, true, false) => {
                                $kernel::<2, 1>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                2
                            }
                            (_, _, _, true) => {
                                $kernel::<1, $nv>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                1
                            }
                            (_, _, _, false) => {
                                $kernel::<1, 1>(k, a, la, b, lb, c, lc, mask, $acc, pf);
                                1
                            }
                        };
                        i += step;
                    }
                }
                j += width;
            }
        }};
    }

    /// AVX-512: tiles of 8 rows × 2 vectors (32 columns): 16 accumulators of the 32 registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA; the views must fit their slices and agree in shape.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn gemm_avx512(
        a: MatRef<'_>,
        b: MatRef<'_>,
        c: MatMut<'_>,
        acc: bool,
        stream: bool,
    ) {
        let mask = |lanes: usize| -> __mmask16 { ((1u32 << lanes) - 1) as __mmask16 };
        tiles!(a, b, c, acc, stream, 16, 8, 2, tile512, mask);
    }

    /// Bytes of `B` ahead of the row being read that [`prefetch_row`] fetches: 8 rows of a
    /// GQA head's 128 values (4, 8 and 16 rows measured; 8 was best).
    const STREAM_AHEAD: usize = 4096;

    /// Prefetches into L2 the first `cols` values of the row of `B` [`STREAM_AHEAD`] bytes
    /// (at least one row) after the row at `row` (addresses past `B` are harmless: a
    /// prefetch never faults, and `wrapping_add` makes no claim on the allocation).
    #[inline(always)]
    fn prefetch_row(row: *const f32, ldb: usize, cols: usize) {
        let ahead = (STREAM_AHEAD / 4).div_ceil(ldb.max(1)) * ldb;
        let at = row.wrapping_add(ahead);
        for x in (0..cols).step_by(16) {
            // SAFETY: SSE is part of x86-64; a prefetch reads nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(x).cast()) };
        }
    }

    /// One `MR × NV·16` tile of `C`; the last vector of each row uses `mask`.
    ///
    /// # Safety
    /// AVX-512F + FMA; `a` has `MR` rows of `k`, `b` `k` rows and `c` `MR` rows covering the
    /// tile's unmasked lanes.
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile512<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        mask: __mmask16,
        accumulate: bool,
        prefetch: usize,
    ) {
        let full: __mmask16 = 0xffff;
        let lane_mask = |v: usize| if v + 1 == NV { mask } else { full };
        // SAFETY (whole body): offsets stay inside the tile described by the caller.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            if accumulate {
                for (r, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm512_maskz_loadu_ps(lane_mask(v), c.add(r * ldc + v * 16));
                    }
                }
            }
            for p in 0..k {
                let bp = b.add(p * ldb);
                if prefetch > 0 {
                    prefetch_row(bp, ldb, prefetch);
                }
                let bv: [__m512; NV] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(lane_mask(v), bp.add(v * 16)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * lda + p));
                    for (x, bv) in row.iter_mut().zip(&bv) {
                        *x = _mm512_fmadd_ps(av, *bv, *x);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(c.add(r * ldc + v * 16), lane_mask(v), *x);
                }
            }
        }
    }

    /// AVX2: tiles of 4 rows × 2 vectors (16 columns): 8 accumulators of the 16 registers.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the views must fit their slices and agree in shape.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_avx2(
        a: MatRef<'_>,
        b: MatRef<'_>,
        c: MatMut<'_>,
        acc: bool,
        stream: bool,
    ) {
        let mask = |lanes: usize| -> __m256i {
            let m: [i32; 8] = std::array::from_fn(|l| if l < lanes { -1 } else { 0 });
            // SAFETY: `m` is 8 i32s.
            unsafe { _mm256_loadu_si256(m.as_ptr().cast()) }
        };
        tiles!(a, b, c, acc, stream, 8, 4, 2, tile256, mask);
    }

    /// One `MR × NV·8` tile of `C`; the last vector of each row uses `mask`.
    ///
    /// # Safety
    /// AVX2 + FMA; as [`tile512`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile256<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        mask: __m256i,
        accumulate: bool,
        prefetch: usize,
    ) {
        // SAFETY (whole body): offsets stay inside the tile described by the caller.
        unsafe {
            let full = _mm256_set1_epi32(-1);
            let lane_mask = |v: usize| if v + 1 == NV { mask } else { full };
            let mut acc = [[_mm256_setzero_ps(); NV]; MR];
            if accumulate {
                for (r, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm256_maskload_ps(c.add(r * ldc + v * 8), lane_mask(v));
                    }
                }
            }
            for p in 0..k {
                let bp = b.add(p * ldb);
                if prefetch > 0 {
                    prefetch_row(bp, ldb, prefetch);
                }
                let bv: [__m256; NV] =
                    std::array::from_fn(|v| _mm256_maskload_ps(bp.add(v * 8), lane_mask(v)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * lda + p));
                    for (x, bv) in row.iter_mut().zip(&bv) {
                        *x = _mm256_fmadd_ps(av, *bv, *x);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    _mm256_maskstore_ps(c.add(r * ldc + v * 8), lane_mask(v), *x);
                }
            }
        }
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

    /// Every ISA equals the scalar reference bit for bit, over shapes that hit every tile size,
    /// column tails, strided views and both accumulate modes; the reference itself is checked
    /// against an f64 product.
    #[test]
    fn every_isa_equals_the_reference() {
        for &(m, n, k) in &[
            (1usize, 1usize, 1usize),
            (3, 5, 7),
            (7, 33, 9),
            (8, 32, 64),
            (15, 47, 31),
            (16, 128, 192),
            (4, 512, 40),
            (6, 128, 256),
            (13, 17, 0),
        ] {
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
            let a = values(m * lda, 1);
            let b = values(k * ldb, 2);
            let c0 = values(m * ldc, 3);
            for accumulate in [false, true] {
                let mut want = c0.clone();
                gemm_nn_scalar(
                    MatRef::new(&a, m, k, lda),
                    MatRef::new(&b, k, n, ldb),
                    MatMut::new(&mut want, m, n, ldc),
                    accumulate,
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut e = if accumulate {
                            c0[i * ldc + j] as f64
                        } else {
                            0.0
                        };
                        for p in 0..k {
                            e += a[i * lda + p] as f64 * b[p * ldb + j] as f64;
                        }
                        assert!(
                            (want[i * ldc + j] as f64 - e).abs() < 1e-4,
                            "reference {m}x{n}x{k}"
                        );
                    }
                    // Padding between rows is untouched.
                    assert_eq!(
                        want[i * ldc + n..(i + 1) * ldc],
                        c0[i * ldc + n..(i + 1) * ldc]
                    );
                }
                for isa in Isa::available() {
                    for streamed in [false, true] {
                        let mut got = c0.clone();
                        let product = if streamed {
                            gemm_nn_streamed_with
                        } else {
                            gemm_nn_with
                        };
                        product(
                            isa,
                            MatRef::new(&a, m, k, lda),
                            MatRef::new(&b, k, n, ldb),
                            MatMut::new(&mut got, m, n, ldc),
                            accumulate,
                        );
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "{isa} {m}x{n}x{k} accumulate {accumulate} streamed {streamed}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "gemm_nn")]
    fn shape_mismatch_panics() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        gemm_nn(
            MatRef::new(&a, 2, 3, 3),
            MatRef::new(&a, 2, 3, 3),
            MatMut::new(&mut c, 2, 2, 2),
            false,
        );
    }
}
