//! RMSNorm (Zhang & Sennrich 2019), as Llama/DeepSeek use it:
//! `y_i = w_i * x_i / sqrt(mean(x^2) + eps)`.
//!
//! The mean of squares is accumulated in f64 so the result does not depend on the summation
//! order more than f32 rounding of the final value. It is summed in eight independent lanes:
//! one running f64 sum is a chain of dependent adds (4 cycles each, about 1 µs for a 1024-wide
//! row, and a decode step runs two norms per layer), while eight lanes vectorize.

/// RMS-normalise `x` into `out`, scaling by `weight`. All three have the same length.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), weight.len(), "rmsnorm: weight length");
    assert_eq!(x.len(), out.len(), "rmsnorm: out length");
    let inv = inv_rms(x, eps);
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

/// [`rmsnorm`] in place.
pub fn rmsnorm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(x.len(), weight.len(), "rmsnorm_inplace: weight length");
    let inv = inv_rms(x, eps);
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = w * (*v * inv);
    }
}

/// `1 / sqrt(mean(x²) + eps)`, the squares summed in f64 lanes (module docs).
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v as f64) * (v as f64);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    let ss = acc.iter().sum::<f64>() + tail;
    let mean = (ss / x.len().max(1) as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rms_after_norm() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let w = [1.0f32; 4];
        let mut y = [0.0f32; 4];
        rmsnorm(&x, &w, 0.0, &mut y);
        // mean(x^2) = 50/4 = 12.5
        let r = 12.5f32.sqrt();
        for (a, b) in y.iter().zip(x) {
            assert!((a - b / r).abs() < 1e-6);
        }
        let ms: f32 = y.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-5);
    }

    /// The lane sums equal one f64 running sum to f32 precision (a row whose squares span
    /// many magnitudes, and lengths with and without a tail).
    #[test]
    fn lane_sums_match_a_running_sum() {
        for n in [1usize, 7, 8, 513, 1024, 5120] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 10f32.powi((i % 7) as i32 - 3))
                .collect();
            let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let want = 1.0 / ((ss / n as f64) as f32 + 1e-6).sqrt();
            let got = inv_rms(&x, 1e-6);
            assert!(
                (got - want).abs() <= want * 1e-6,
                "n = {n}: {got} against {want}"
            );
        }
    }

    #[test]
    fn weight_and_eps() {
        let mut x = [1.0f32, 1.0];
        rmsnorm_inplace(&mut x, &[2.0, -1.0], 3.0);
        // 1/sqrt(1+3) = 0.5
        assert_eq!(x, [1.0, -0.5]);
    }
}
