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

/// `x_i ← scale · x_i` in place, returning the largest of `init` and the scaled values: the
/// first step of an online softmax over one block of raw attention scores. Every product is
/// the scalar one and a maximum does not depend on the order it is taken in, so each path
/// returns [`scale_max_scalar`]'s value; NaN entries are passed over, as `f32::max` does.
///
/// Why a kernel: the compiler does not vectorise the scalar fold's `f32::max` chain. In a
/// scratch benchmark of decode's attention (6 query heads of one kv head, 28 layers of 4096
/// positions, one Zen 4 thread) the online softmax's share went from 0.65 to 0.52 ms per
/// token, the rest being the exponentials; about 1% of that attention.
pub fn scale_max(x: &mut [f32], scale: f32, init: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked).
        return unsafe { scale_max_avx2(x, scale, init) };
    }
    #[cfg(target_arch = "aarch64")]
    return scale_max_neon(x, scale, init);
    #[allow(unreachable_code)]
    scale_max_scalar(x, scale, init)
}

/// The reference of [`scale_max`]: one product and one `f32::max` per element, in order.
pub fn scale_max_scalar(x: &mut [f32], scale: f32, init: f32) -> f32 {
    let mut m = init;
    for v in x.iter_mut() {
        *v *= scale;
        m = m.max(*v);
    }
    m
}

/// Eight values at a time, two running maxima; the tail is scalar.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_max_avx2(x: &mut [f32], scale: f32, init: f32) -> f32 {
    use std::arch::x86_64::*;
    let sc = _mm256_set1_ps(scale);
    // `maxps(a, b)` returns `b` when either is NaN: with the data as `a`, a NaN entry leaves
    // the running maximum as it was.
    let (mut m0, mut m1) = (_mm256_set1_ps(init), _mm256_set1_ps(init));
    let mut body = x.chunks_exact_mut(16);
    for c in &mut body {
        // SAFETY: `c` is 16 values; AVX2 per the caller.
        unsafe {
            let p = c.as_mut_ptr();
            let a = _mm256_mul_ps(_mm256_loadu_ps(p), sc);
            let b = _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), sc);
            _mm256_storeu_ps(p, a);
            _mm256_storeu_ps(p.add(8), b);
            m0 = _mm256_max_ps(a, m0);
            m1 = _mm256_max_ps(b, m1);
        }
    }
    let mut lanes = [0.0f32; 16];
    // SAFETY: 16 f32.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), m0);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), m1);
    }
    let m = lanes.iter().fold(init, |m, &v| m.max(v));
    scale_max_scalar(body.into_remainder(), scale, m)
}

/// Four values at a time (`fmaxnm` passes over NaN as `f32::max` does); the tail is scalar.
#[cfg(target_arch = "aarch64")]
fn scale_max_neon(x: &mut [f32], scale: f32, init: f32) -> f32 {
    use std::arch::aarch64::*;
    // SAFETY (each block): NEON is part of AArch64; every load and store is of 4 values
    // inside `x`.
    let mut m = unsafe { vdupq_n_f32(init) };
    let mut body = x.chunks_exact_mut(4);
    for c in &mut body {
        unsafe {
            let v = vmulq_n_f32(vld1q_f32(c.as_ptr()), scale);
            vst1q_f32(c.as_mut_ptr(), v);
            m = vmaxnmq_f32(m, v);
        }
    }
    let m = unsafe { vmaxnmvq_f32(m) }.max(init);
    scale_max_scalar(body.into_remainder(), scale, m)
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

    /// The vector path scales every element as the reference does and returns the same
    /// maximum, with NaN and `−∞` entries, tails of every length, and an `init` above all.
    #[test]
    fn scale_max_equals_the_reference() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 33, 256, 301] {
            for init in [f32::NEG_INFINITY, -3.5, 100.0] {
                let x: Vec<f32> = (0..n)
                    .map(|i| match i % 13 {
                        4 => f32::NEG_INFINITY,
                        9 => f32::NAN,
                        _ => ((i * 37 % 29) as f32 - 14.0) * 0.73,
                    })
                    .collect();
                let (mut want, mut got) = (x.clone(), x.clone());
                let mw = scale_max_scalar(&mut want, 0.0884, init);
                let mg = scale_max(&mut got, 0.0884, init);
                assert_eq!(mg.to_bits(), mw.to_bits(), "n {n}, init {init}");
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "n {n}");
                }
            }
        }
        // The largest element found wherever it sits, not only in the first lanes.
        for at in 0..40 {
            let mut x = vec![-1.0f32; 40];
            x[at] = 5.0;
            assert_eq!(scale_max(&mut x, 2.0, f32::NEG_INFINITY), 10.0, "at {at}");
        }
    }

    #[test]
    fn sigmoid_values() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797_1).abs() < 1e-6);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
    }
}
