//! Softmax and the logistic sigmoid.
//!
//! `softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)`: subtracting the maximum keeps
//! every exponent ≤ 0, so nothing overflows. A row of only `-inf` is left as all zeros.

/// Softmax of `x` in place: with AVX2, exponentials from [`crate::exp::exp8`] (within 2 ulp
/// of libm's; the sum is accumulated in f64 either way).
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let inv = (1.0 / exp_sub_sum(x, max)) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// The reference: libm's `exp`, summed in order.
pub fn softmax_scalar(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let inv = (1.0 / exp_sub_sum_scalar(x, max)) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `x_i ← exp(x_i − max)` in place, returning `Σ_i exp(x_i − max)` accumulated in f64: the
/// unnormalised half of a softmax, for callers that normalise later (attention over a cache
/// in blocks, with a running maximum). `max` must not be `−∞`; entries of `−∞` give 0. The
/// same exponentials as [`softmax_inplace`]'s (AVX2: [`crate::exp::exp8`]; AArch64:
/// [`crate::exp::exp4`]; else libm's).
pub fn exp_sub_sum(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::exp::has_exp8() {
        // SAFETY: AVX2 and FMA are available (checked).
        return unsafe { exp_sub_sum_avx2(x, max) };
    }
    #[cfg(target_arch = "aarch64")]
    return exp_sub_sum_neon(x, max);
    #[allow(unreachable_code)]
    exp_sub_sum_scalar(x, max)
}

/// [`exp_sub_sum`] with libm's `exp`, summed in order.
fn exp_sub_sum_scalar(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

/// Eight values at a time; the tail goes through a padded vector, so every element gets the
/// value it would get anywhere in the slice.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_avx2(x: &mut [f32], max: f32) -> f64 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_pd();
    let mut body = x.chunks_exact_mut(8);
    for c in &mut body {
        // SAFETY: `c` is 8 values; AVX2/FMA per the caller.
        unsafe {
            let e = crate::exp::exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
    }
    let tail = body.into_remainder();
    let mut total = {
        let mut lanes = [0.0f64; 4];
        // SAFETY: 4 f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum::<f64>()
    };
    if !tail.is_empty() {
        // Padding with −∞ gives 0, which adds nothing.
        let mut buf = [f32::NEG_INFINITY; 8];
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: `buf` is 8 values.
        unsafe {
            let e = crate::exp::exp8(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), m));
            _mm256_storeu_ps(buf.as_mut_ptr(), e);
        }
        tail.copy_from_slice(&buf[..tail.len()]);
        total += tail.iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

/// Four values at a time with [`crate::exp::exp4`]; sums in f64 as the other paths.
#[cfg(target_arch = "aarch64")]
fn exp_sub_sum_neon(x: &mut [f32], max: f32) -> f64 {
    use std::arch::aarch64::*;
    // SAFETY (each block): NEON is part of AArch64; every load and store is of 4 values
    // inside `x` or a 4-value buffer.
    let m = unsafe { vdupq_n_f32(max) };
    let mut sum = unsafe { vdupq_n_f64(0.0) };
    let mut body = x.chunks_exact_mut(4);
    for c in &mut body {
        unsafe {
            let e = crate::exp::exp4(vsubq_f32(vld1q_f32(c.as_ptr()), m));
            vst1q_f32(c.as_mut_ptr(), e);
            sum = vaddq_f64(sum, vcvt_f64_f32(vget_low_f32(e)));
            sum = vaddq_f64(sum, vcvt_high_f64_f32(e));
        }
    }
    let tail = body.into_remainder();
    let mut total = unsafe { vgetq_lane_f64::<0>(sum) + vgetq_lane_f64::<1>(sum) };
    if !tail.is_empty() {
        // Padding with −∞ gives 0, which adds nothing.
        let mut buf = [f32::NEG_INFINITY; 4];
        buf[..tail.len()].copy_from_slice(tail);
        unsafe {
            let e = crate::exp::exp4(vsubq_f32(vld1q_f32(buf.as_ptr()), m));
            vst1q_f32(buf.as_mut_ptr(), e);
        }
        tail.copy_from_slice(&buf[..tail.len()]);
        total += tail.iter().map(|&v| v as f64).sum::<f64>();
    }
    total
}

/// The logistic sigmoid `1 / (1 + exp(-x))`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_to_one_and_orders() {
        let mut x = [1.0f32, 2.0, 3.0, 1000.0];
        softmax_inplace(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] > 0.999);
        let mut y = [0.0f32, (2.0f32).ln()];
        softmax_inplace(&mut y);
        assert!((y[0] - 1.0 / 3.0).abs() < 1e-6 && (y[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn masked_entries_get_zero() {
        let mut x = [0.0f32, f32::NEG_INFINITY, 0.0];
        softmax_inplace(&mut x);
        assert_eq!(x, [0.5, 0.0, 0.5]);
        let mut all = [f32::NEG_INFINITY; 2];
        softmax_inplace(&mut all);
        assert_eq!(all, [0.0, 0.0]);
    }

    /// The vector path's probabilities are within a few ulp of the reference's, masked entries
    /// are exactly 0, and each element's value does not depend on where it sits.
    #[test]
    fn vector_path_matches_the_reference() {
        for n in [1usize, 7, 8, 9, 31, 64, 300] {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 11 == 5 {
                        f32::NEG_INFINITY
                    } else {
                        ((i * 37 % 23) as f32 - 11.0) * 0.9
                    }
                })
                .collect();
            let mut want = x.clone();
            softmax_scalar(&mut want);
            let mut got = x.clone();
            softmax_inplace(&mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 4.0 * f32::EPSILON * w.abs(),
                    "n {n}, {i}: {g} vs {w}"
                );
                if x[i] == f32::NEG_INFINITY {
                    assert_eq!(*g, 0.0);
                }
            }
        }
    }

    #[test]
    fn sigmoid_values() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797_1).abs() < 1e-6);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
    }
}
