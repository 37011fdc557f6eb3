//! Activations: SiLU (`x * sigmoid(x)`, also "swish") and the SwiGLU product
//! `silu(gate) * up` of gated MLPs (Shazeer 2020).

/// SiLU of one value.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate[i] = silu(gate[i]) * up[i]`, in place in `gate`; with AVX2 the exponential comes
/// from [`crate::exp::exp8`], on AArch64 from `exp::exp4` (within 2 ulp of libm's), the rest
/// as in [`silu`].
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu_inplace: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if crate::exp::has_exp8() {
        // SAFETY: AVX2 and FMA are available (checked); the lengths are equal.
        return unsafe { swiglu_avx2(gate, up) };
    }
    #[cfg(target_arch = "aarch64")]
    return swiglu_neon(gate, up);
    #[allow(unreachable_code)]
    swiglu_scalar(gate, up);
}

/// Four values at a time with [`crate::exp::exp4`], each step as in [`silu`].
#[cfg(target_arch = "aarch64")]
fn swiglu_neon(gate: &mut [f32], up: &[f32]) {
    use std::arch::aarch64::*;
    // SAFETY (whole body): NEON is part of AArch64; every load and store is of 4 values inside
    // `gate`, `up` or a 4-value buffer.
    unsafe {
        let f = |g: float32x4_t, u: float32x4_t| {
            let e = crate::exp::exp4(vnegq_f32(g));
            vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0), e)), u)
        };
        let mut gs = gate.chunks_exact_mut(4);
        let mut us = up.chunks_exact(4);
        for (g, u) in (&mut gs).zip(&mut us) {
            vst1q_f32(
                g.as_mut_ptr(),
                f(vld1q_f32(g.as_ptr()), vld1q_f32(u.as_ptr())),
            );
        }
        let (g, u) = (gs.into_remainder(), us.remainder());
        if !g.is_empty() {
            let (mut gb, mut ub) = ([0.0f32; 4], [0.0f32; 4]);
            gb[..g.len()].copy_from_slice(g);
            ub[..u.len()].copy_from_slice(u);
            vst1q_f32(
                gb.as_mut_ptr(),
                f(vld1q_f32(gb.as_ptr()), vld1q_f32(ub.as_ptr())),
            );
            g.copy_from_slice(&gb[..g.len()]);
        }
    }
}

/// The reference.
pub fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    // g / (1 + e^−g) · u, each step an IEEE operation as in `silu`.
    let f = |g: __m256, u: __m256| {
        // SAFETY: AVX2/FMA per the caller.
        let e = unsafe { crate::exp::exp8(_mm256_sub_ps(_mm256_setzero_ps(), g)) };
        _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0), e)), u)
    };
    let mut gs = gate.chunks_exact_mut(8);
    let mut us = up.chunks_exact(8);
    for (g, u) in (&mut gs).zip(&mut us) {
        // SAFETY: 8 values each.
        unsafe {
            let r = f(_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr()));
            _mm256_storeu_ps(g.as_mut_ptr(), r);
        }
    }
    let (g, u) = (gs.into_remainder(), us.remainder());
    if !g.is_empty() {
        let (mut gb, mut ub) = ([0.0f32; 8], [0.0f32; 8]);
        gb[..g.len()].copy_from_slice(g);
        ub[..u.len()].copy_from_slice(u);
        // SAFETY: 8 values each.
        unsafe {
            let r = f(_mm256_loadu_ps(gb.as_ptr()), _mm256_loadu_ps(ub.as_ptr()));
            _mm256_storeu_ps(gb.as_mut_ptr(), r);
        }
        g.copy_from_slice(&gb[..g.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector path is within a few ulp of the reference (its `exp` is within 2 ulp), and
    /// the ends behave: very negative gates give −0·u, very positive ones g·u.
    #[test]
    fn vector_path_matches_the_reference() {
        for n in [1usize, 8, 13, 100] {
            let g: Vec<f32> = (0..n).map(|i| (i as f32 - 50.0) * 2.1).collect();
            let u: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.01).collect();
            let mut want = g.clone();
            swiglu_scalar(&mut want, &u);
            let mut got = g.clone();
            swiglu_inplace(&mut got, &u);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 4.0 * f32::EPSILON * b.abs(),
                    "{i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn silu_values() {
        assert_eq!(silu(0.0), 0.0);
        // silu(1) = 1 / (1 + e^-1)
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((silu(-1.0) + 0.268_941_4).abs() < 1e-6);
        assert!(silu(-100.0).abs() < 1e-30);
    }

    #[test]
    fn swiglu_product() {
        let mut g = [1.0f32, 0.0];
        swiglu_inplace(&mut g, &[2.0, 5.0]);
        assert!((g[0] - 2.0 * 0.731_058_6).abs() < 1e-6);
        assert_eq!(g[1], 0.0);
    }
}
