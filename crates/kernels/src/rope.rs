//! Rotary position embedding (Su et al. 2021) applied to one head vector.
//!
//! Each pair `(a, b)` of dims is rotated by the angle of its frequency `i` at this position:
//! `(a, b) -> (a cos_i - b sin_i, b cos_i + a sin_i)`. `cos`/`sin` hold one value per pair
//! (already multiplied by any YaRN attention factor).
//!
//! Which dims form a pair:
//! - interleaved (DeepSeek MLA): `(x0, x1), (x2, x3), ...` — DeepSeek-V2's complex view of
//!   consecutive pairs, and DeepSeek-V3's `rope_interleave`. transformers' V3 writes the result
//!   de-interleaved (all rotated first members, then all second members) while V2 writes it back
//!   in place; as queries and keys get the same layout, dot products are the same either way.
//!   This kernel keeps the pairs in place.
//! - halves (Llama/Qwen `rotate_half`): `(x_i, x_{i + d/2})`.

/// Rotate `x` (length `2 * cos.len()`) in place.
pub fn rope_inplace(x: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    assert_eq!(sin.len(), half, "rope_inplace: sin length");
    assert_eq!(x.len(), 2 * half, "rope_inplace: x length");
    for i in 0..half {
        let (ia, ib) = if interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        let (a, b) = (x[ia], x[ib]);
        x[ia] = a * cos[i] - b * sin[i];
        x[ib] = b * cos[i] + a * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turn_interleaved() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        // pair 0 by 90°, pair 1 unrotated
        rope_inplace(&mut x, &[0.0, 1.0], &[1.0, 0.0], true);
        assert_eq!(x, [-2.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn quarter_turn_halves() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        // pairs (x0, x2) by 90°, (x1, x3) unrotated
        rope_inplace(&mut x, &[0.0, 1.0], &[1.0, 0.0], false);
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
    }

    #[test]
    fn relative_position_property() {
        // <R(p) q, R(s) k> depends only on p - s.
        let q = [0.3f32, -1.2, 0.7, 2.0];
        let k = [1.1f32, 0.4, -0.5, 0.9];
        let freqs = [1.0f32, 0.1];
        let dot_at = |p: f32, s: f32| {
            let tab = |pos: f32| -> (Vec<f32>, Vec<f32>) {
                (
                    freqs.iter().map(|f| (f * pos).cos()).collect(),
                    freqs.iter().map(|f| (f * pos).sin()).collect(),
                )
            };
            let (mut a, mut b) = (q, k);
            let (c, s1) = tab(p);
            rope_inplace(&mut a, &c, &s1, true);
            let (c, s2) = tab(s);
            rope_inplace(&mut b, &c, &s2, true);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot_at(5.0, 2.0) - dot_at(13.0, 10.0)).abs() < 1e-5);
    }
}
