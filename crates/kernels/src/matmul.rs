//! Dot products and matrix-vector products over f32.
//!
//! Weights are `[rows, cols]` row-major (PyTorch's `[out, in]`): `y = W x` is one dot product
//! per row. [`dot`] keeps eight partial sums, which bounds rounding error growth like a pairwise
//! sum and is the shape a SIMD variant will take. [`nn`]: register-blocked `C = A·B` with
//! `B` untransposed ([`gemm_nn`]); [`nt`]: `C = A·Bᵀ`, dot products of rows ([`gemm_nt`]).

pub mod nn;
pub mod nt;
pub use nn::{gemm_nn, gemm_nn_streamed, MatMut, MatRef};
pub use nt::gemm_nt;

/// `sum_i a_i * b_i`. Panics if the lengths differ.
///
/// Lane `k` of eight partial sums takes the products `i ≡ k (mod 8)`, combined pairwise at the
/// end. On CPUs with AVX2 the same code is compiled for 256-bit registers (one partial sum per
/// lane; separate multiply and add, never fused), so the result is the same bit for bit.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

/// `y += alpha * x`. Panics if the lengths differ. Each element is one multiply and one add,
/// whatever the vector width (AVX2 where available).
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { axpy_avx2(alpha, x, y) };
    }
    axpy_lanes(alpha, x, y)
}

/// [`dot`] of each of `N` rows `a[q]` with one `b`, reading `b` once for all of them (the
/// scores of several queries against one cached key). Each result equals `dot(a[q], b)` bit
/// for bit. Panics if a length differs.
pub fn dot_n<const N: usize>(a: [&[f32]; N], b: &[f32]) -> [f32; N] {
    assert!(
        a.iter().all(|r| r.len() == b.len()),
        "dot_n: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { dot_n_avx2(a, b) };
    }
    dot_n_lanes(a, b)
}

/// `y[q] += alpha[q] * x` for `N` outputs sharing one `x`, reading `x` once for all of them;
/// each `y[q]` ends as [`axpy`] would leave it. Panics if a length differs.
pub fn axpy_n<const N: usize>(alpha: [f32; N], x: &[f32], y: [&mut [f32]; N]) {
    assert!(
        y.iter().all(|r| r.len() == x.len()),
        "axpy_n: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { axpy_n_avx2(alpha, x, y) };
    }
    axpy_n_lanes(alpha, x, y)
}

/// [`dot_n`]'s arithmetic: [`dot_lanes`] per row, over one pass of `b`.
#[inline(always)]
fn dot_n_lanes<const N: usize>(a: [&[f32]; N], b: &[f32]) -> [f32; N] {
    let mut acc = [[0.0f32; 8]; N];
    let whole = b.len() / 8 * 8;
    for c in (0..whole).step_by(8) {
        let y = &b[c..c + 8];
        for q in 0..N {
            let x = &a[q][c..c + 8];
            for k in 0..8 {
                acc[q][k] += x[k] * y[k];
            }
        }
    }
    std::array::from_fn(|q| {
        let mut tail = 0.0f32;
        for (x, y) in a[q][whole..].iter().zip(&b[whole..]) {
            tail += x * y;
        }
        let acc = &acc[q];
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    })
}

/// [`axpy_n`]'s arithmetic.
#[inline(always)]
fn axpy_n_lanes<const N: usize>(alpha: [f32; N], x: &[f32], y: [&mut [f32]; N]) {
    let whole = x.len() / 8 * 8;
    for c in (0..whole).step_by(8) {
        let v = &x[c..c + 8];
        for q in 0..N {
            let o = &mut y[q][c..c + 8];
            for k in 0..8 {
                o[k] += alpha[q] * v[k];
            }
        }
    }
    for q in 0..N {
        for (o, &v) in y[q][whole..].iter_mut().zip(&x[whole..]) {
            *o += alpha[q] * v;
        }
    }
}

/// [`dot_n_lanes`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_n_avx2<const N: usize>(a: [&[f32]; N], b: &[f32]) -> [f32; N] {
    use std::arch::x86_64::*;
    let whole = b.len() / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut c = 0;
    while c < whole {
        // SAFETY: `c + 8 <= whole <= len` of `b` and of every `a[q]` (checked by the caller).
        unsafe {
            let y = _mm256_loadu_ps(b.as_ptr().add(c));
            for q in 0..N {
                let x = _mm256_loadu_ps(a[q].as_ptr().add(c));
                // Lane k: acc[k] += x[k] * y[k], a multiply then an add (as dot_lanes).
                acc[q] = _mm256_add_ps(acc[q], _mm256_mul_ps(x, y));
            }
        }
        c += 8;
    }
    std::array::from_fn(|q| {
        let mut l = [0.0f32; 8];
        // SAFETY: `l` is 8 floats.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc[q]) };
        let mut tail = 0.0f32;
        for (x, y) in a[q][whole..].iter().zip(&b[whole..]) {
            tail += x * y;
        }
        ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])) + tail
    })
}

/// [`axpy_n_lanes`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_n_avx2<const N: usize>(alpha: [f32; N], x: &[f32], y: [&mut [f32]; N]) {
    use std::arch::x86_64::*;
    let whole = x.len() / 8 * 8;
    let al: [__m256; N] = std::array::from_fn(|q| _mm256_set1_ps(alpha[q]));
    let mut c = 0;
    while c < whole {
        // SAFETY: `c + 8 <= whole <= len` of `x` and of every `y[q]` (checked by the caller).
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(c));
            for q in 0..N {
                let o = y[q].as_mut_ptr().add(c);
                // o += alpha · v: a multiply then an add (as axpy_lanes).
                _mm256_storeu_ps(
                    o,
                    _mm256_add_ps(_mm256_loadu_ps(o), _mm256_mul_ps(al[q], v)),
                );
            }
        }
        c += 8;
    }
    for q in 0..N {
        for (o, &v) in y[q][whole..].iter_mut().zip(&x[whole..]) {
            *o += alpha[q] * v;
        }
    }
}

/// Whether the CPU has AVX2 (cached by the standard library's detection).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// [`dot`]'s arithmetic: the scalar reference, and the body of the AVX2 build.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in at.iter().zip(bt) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// [`axpy`]'s arithmetic.
#[inline(always)]
fn axpy_lanes(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// [`dot_lanes`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let [r] = dot_n_avx2([a], b);
    r
}

/// [`axpy_lanes`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_n_avx2([alpha], x, [y])
}

/// `y = W x` for `W` of shape `[y.len(), x.len()]`, row-major.
pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), y.len() * cols, "matvec: weight size");
    for (r, o) in y.iter_mut().enumerate() {
        *o = dot(&w[r * cols..(r + 1) * cols], x);
    }
}

/// `Y = X W^T` for `X` `[t, k]`, `W` `[n, k]`, `Y` `[t, n]`, all row-major: one [`matvec`] per
/// row of `X`.
pub fn matmul_wt(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    assert!(k > 0, "matmul_wt: k is 0");
    let t = x.len() / k;
    assert_eq!(t * k, x.len(), "matmul_wt: x is not [t, k]");
    let n = y.len().checked_div(t).unwrap_or(0);
    assert_eq!(n * t, y.len(), "matmul_wt: y is not [t, n]");
    assert_eq!(w.len(), n * k, "matmul_wt: weight size");
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n.max(1))) {
        matvec(w, xr, yr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_f64_sum() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-5);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_builds_equal_the_scalar_reference() {
        if !has_avx2() {
            return;
        }
        for n in [0usize, 1, 7, 8, 9, 64, 577] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() / 7.0).collect();
            // SAFETY: AVX2 checked above.
            let simd = unsafe { dot_avx2(&a, &b) };
            assert_eq!(simd.to_bits(), dot_lanes(&a, &b).to_bits(), "dot, n = {n}");
            let (mut y1, mut y2) = (b.clone(), b.clone());
            // SAFETY: AVX2 checked above.
            unsafe { axpy_avx2(0.3, &a, &mut y1) };
            axpy_lanes(0.3, &a, &mut y2);
            assert_eq!(y1, y2, "axpy, n = {n}");
        }
    }

    #[test]
    fn many_rows_equal_one_at_a_time() {
        for n in [0usize, 5, 8, 64, 577] {
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|q| {
                    (0..n)
                        .map(|i| ((i * 7 + q) as f32 * 0.37).sin() * 1e2)
                        .collect()
                })
                .collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() / 7.0).collect();
            let got = dot_n([&rows[0][..], &rows[1], &rows[2], &rows[3]], &b);
            for q in 0..4 {
                assert_eq!(got[q].to_bits(), dot(&rows[q], &b).to_bits(), "n {n} q {q}");
            }
            let mut ys = rows.clone();
            let alpha = [0.5f32, -1.25, 3.0, 0.0];
            let [y0, y1, y2, y3] = &mut ys[..] else {
                unreachable!()
            };
            axpy_n(alpha, &b, [&mut y0[..], y1, y2, y3]);
            for q in 0..4 {
                let mut want = rows[q].clone();
                axpy(alpha[q], &b, &mut want);
                assert_eq!(ys[q], want, "n {n} q {q}");
            }
        }
    }

    #[test]
    fn matvec_small() {
        // [[1,2,3],[4,5,6]] * [1,0,-1] = [-2,-2]
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut y = [0.0f32; 2];
        matvec(&w, &[1.0, 0.0, -1.0], &mut y);
        assert_eq!(y, [-2.0, -2.0]);
    }

    #[test]
    fn matmul_rows_are_matvecs() {
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x = [1.0f32, 0.0, -1.0, 0.0, 1.0, 0.0];
        let mut y = [0.0f32; 4];
        matmul_wt(&x, &w, 3, &mut y);
        assert_eq!(y, [-2.0, -2.0, 2.0, 5.0]);
    }

    #[test]
    fn axpy_adds() {
        let mut y = [1.0f32, 1.0];
        axpy(2.0, &[1.0, -1.0], &mut y);
        assert_eq!(y, [3.0, -1.0]);
    }
}
