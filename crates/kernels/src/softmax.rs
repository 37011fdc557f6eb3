//! Softmax and the logistic sigmoid.
//!
//! `softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)`: subtracting the maximum keeps
//! every exponent ≤ 0, so nothing overflows. A row of only `-inf` is left as all zeros.

/// Softmax of `x` in place.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
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

    #[test]
    fn sigmoid_values() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797_1).abs() < 1e-6);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
    }
}
