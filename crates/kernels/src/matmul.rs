//! Dot products and matrix-vector products over f32.
//!
//! Weights are `[rows, cols]` row-major (PyTorch's `[out, in]`): `y = W x` is one dot product
//! per row. [`dot`] keeps eight partial sums, which bounds rounding error growth like a pairwise
//! sum and is the shape a SIMD variant will take.

/// `sum_i a_i * b_i`. Panics if the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: length mismatch");
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
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
