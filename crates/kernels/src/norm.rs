//! RMSNorm (Zhang & Sennrich 2019), as Llama/DeepSeek use it:
//! `y_i = w_i * x_i / sqrt(mean(x^2) + eps)`.
//!
//! The mean of squares is accumulated in f64 so the result does not depend on the summation
//! order more than f32 rounding of the final value.

/// RMS-normalise `x` into `out`, scaling by `weight`. All three have the same length.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), weight.len(), "rmsnorm: weight length");
    assert_eq!(x.len(), out.len(), "rmsnorm: out length");
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (ss / x.len().max(1) as f64) as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

/// [`rmsnorm`] in place.
pub fn rmsnorm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(x.len(), weight.len(), "rmsnorm_inplace: weight length");
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (ss / x.len().max(1) as f64) as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = w * (*v * inv);
    }
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

    #[test]
    fn weight_and_eps() {
        let mut x = [1.0f32, 1.0];
        rmsnorm_inplace(&mut x, &[2.0, -1.0], 3.0);
        // 1/sqrt(1+3) = 0.5
        assert_eq!(x, [1.0, -0.5]);
    }
}
