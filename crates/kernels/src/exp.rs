//! `exp` over eight f32 lanes (AVX2) or four (NEON), for softmax and SiLU.
//!
//! Prefill evaluates hundreds of millions of exponentials (every attention score, every
//! expert's gate), and the libm call per value showed in profiles. The method is the classic
//! one (Cody and Waite's reduction, Cephes' `expf` polynomial): `n = round(x·log2 e)`,
//! `r = x − n·ln 2` in two parts (the first exact in f32), `e^r ≈ 1 + r + r²·P(r)` with a
//! degree-5 `P` on `|r| ≤ ½ ln 2`, then `·2^n`, built from exponent bits in two halves so that
//! `n = 128` (just below `ln(f32::MAX)`) still works. Error: within 2 ulp of the correctly
//! rounded value over the whole range (the test measures it against `f32::exp`). Results past
//! the ends are exact: `x > ln(f32::MAX)` gives `+∞`, `x < ln(f32::MIN_POSITIVE)` gives `0`
//! (libm returns a subnormal there, below 1.2·10⁻³⁸), `−∞ → 0`, NaN stays NaN.
//!
//! Each lane's result depends on that lane's input only, so callers that pad a slice's tail
//! into a full vector give every element the same value wherever it sits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Inputs above this overflow f32 (`ln(f32::MAX)`).
pub const EXP_HI: f32 = 88.722_83;
/// Inputs below this would give subnormals (`ln(f32::MIN_POSITIVE)`): the vector path returns
/// 0 there.
pub const EXP_LO: f32 = -87.336_55;

/// `log2 e`: `n = round(x·LOG2E)`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2 = C1 + C2`: `C1` has few mantissa bits, so `n·C1` is exact for `|n| ≤ 128`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const C1: f32 = 0.693_359_4;
/// The rest of `ln 2`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const C2: f32 = -2.121_944_4e-4;
/// `P(r)`, highest degree first: `e^r ≈ 1 + r + r²·P(r)` on `|r| ≤ ½ ln 2` (Cephes' `expf`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const P: [f32; 6] = [
    1.987_569_2e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` lane by lane.
///
/// # Safety
/// AVX2 and FMA must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn exp8(x: __m256) -> __m256 {
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C1), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(C2), r);
    let mut p = _mm256_set1_ps(P[0]);
    for &c in &P[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // 2^n as 2^(n/2)·2^(n − n/2): both halves are normal for n in [−126, 128].
    let ni = _mm256_cvtps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )))
    };
    let e = _mm256_mul_ps(_mm256_mul_ps(y, pow2(n1)), pow2(n2));
    // Ends: above EXP_HI +∞, below EXP_LO 0 (−∞ included), NaN itself.
    let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI));
    let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
    let e = _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), over);
    let e = _mm256_andnot_ps(under, e);
    _mm256_blendv_ps(e, x, nan)
}

/// `e^x` lane by lane on four lanes: [`exp8`]'s method step for step (the same constants,
/// fused multiply-adds where it fuses), so both give the same value for the same input.
#[cfg(target_arch = "aarch64")]
#[inline]
pub fn exp4(x: std::arch::aarch64::float32x4_t) -> std::arch::aarch64::float32x4_t {
    use std::arch::aarch64::*;
    // SAFETY: NEON is part of AArch64; these intrinsics read and write registers only.
    unsafe {
        // Round to nearest, ties to even, as `_mm256_round_ps` does.
        let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(LOG2E)));
        // r = x − n·C1 − n·C2 (fused, as `fnmadd`).
        let r = vfmsq_f32(x, n, vdupq_n_f32(C1));
        let r = vfmsq_f32(r, n, vdupq_n_f32(C2));
        let mut p = vdupq_n_f32(P[0]);
        for &c in &P[1..] {
            p = vfmaq_f32(vdupq_n_f32(c), p, r);
        }
        let r2 = vmulq_f32(r, r);
        let y = vaddq_f32(vfmaq_f32(r, p, r2), vdupq_n_f32(1.0));
        let ni = vcvtnq_s32_f32(n);
        let n1 = vshrq_n_s32::<1>(ni);
        let n2 = vsubq_s32(ni, n1);
        let pow2 =
            |k: int32x4_t| vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(127))));
        let e = vmulq_f32(vmulq_f32(y, pow2(n1)), pow2(n2));
        let over = vcgtq_f32(x, vdupq_n_f32(EXP_HI));
        let under = vcltq_f32(x, vdupq_n_f32(EXP_LO));
        // NaN ≠ NaN: `ceq` is false exactly for NaN lanes.
        let num = vceqq_f32(x, x);
        let e = vbslq_f32(over, vdupq_n_f32(f32::INFINITY), e);
        let e = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(e), under));
        vbslq_f32(num, e, x)
    }
}

/// Whether [`exp8`] can run here.
pub fn has_exp8() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;

    /// Whether this machine has a vector `exp`.
    fn has_vector_exp() -> bool {
        cfg!(target_arch = "aarch64") || has_exp8()
    }

    fn exp_lanes(x: [f32; 8]) -> [f32; 8] {
        let mut out = [0.0f32; 8];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the test runs only where AVX2/FMA exist (checked by the caller).
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr())))
        };
        #[cfg(target_arch = "aarch64")]
        for (o, i) in out.chunks_exact_mut(4).zip(x.chunks_exact(4)) {
            use std::arch::aarch64::*;
            // SAFETY: four values each.
            unsafe { vst1q_f32(o.as_mut_ptr(), exp4(vld1q_f32(i.as_ptr()))) };
        }
        out
    }

    /// The method of the module docs on one value in scalar steps (fused where the vector
    /// paths fuse), for checking that every vector path is exactly that method.
    fn exp_model(x: f32) -> f32 {
        if x.is_nan() {
            return x;
        }
        if x > EXP_HI {
            return f32::INFINITY;
        }
        if x < EXP_LO {
            return 0.0;
        }
        let n = (x * LOG2E).round_ties_even();
        let r = (-n).mul_add(C1, x);
        let r = (-n).mul_add(C2, r);
        let p = P[1..].iter().fold(P[0], |p, &c| p.mul_add(r, c));
        let y = p.mul_add(r * r, r) + 1.0;
        let ni = n as i32;
        let (n1, n2) = (ni >> 1, ni - (ni >> 1));
        let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
        y * pow2(n1) * pow2(n2)
    }

    #[test]
    fn vector_paths_are_the_method_exactly() {
        if !has_vector_exp() {
            return;
        }
        let xs: Vec<f32> = (0..200_000)
            .map(|i| EXP_LO - 1.0 + i as f32 * ((EXP_HI - EXP_LO + 2.0) / 200_000.0))
            .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0])
            .collect();
        for chunk in xs.chunks(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..chunk.len()].copy_from_slice(chunk);
            for (&x, &g) in lanes.iter().zip(&exp_lanes(lanes)) {
                let want = exp_model(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "exp({x}) = {g}, the method gives {want}"
                );
            }
        }
    }

    /// Distance in units in the last place between two positive normal floats.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn within_two_ulp_of_libm_over_the_range() {
        if !has_vector_exp() {
            return;
        }
        let mut worst = 0;
        let mut x = EXP_LO;
        // ~1.2 M points over the normal range, plus a dense sweep near 0.
        let step = (EXP_HI - EXP_LO) / 1_200_000.0;
        let mut xs = Vec::new();
        while x <= EXP_HI {
            xs.push(x);
            x += step;
        }
        xs.extend((-10_000..10_000).map(|i| i as f32 * 1e-4));
        xs.extend([0.0, -0.0, 1.0, -1.0, EXP_HI, EXP_LO, 88.7, -87.3]);
        for chunk in xs.chunks(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let got = exp_lanes(lanes);
            for (&x, &g) in lanes.iter().zip(&got) {
                let want = x.exp();
                let d = ulps(g, want);
                assert!(d <= 2, "exp({x}) = {g}, libm {want} ({d} ulp)");
                worst = worst.max(d);
            }
        }
        assert!(worst <= 2);
    }

    #[test]
    fn ends_are_exact() {
        if !has_vector_exp() {
            return;
        }
        let got = exp_lanes([
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            100.0,
            -100.0,
            88.8,
            -87.4,
            0.0,
        ]);
        assert_eq!(got[0], 0.0);
        assert_eq!(got[1], f32::INFINITY);
        assert!(got[2].is_nan());
        assert_eq!(got[3], f32::INFINITY);
        assert_eq!(got[4], 0.0);
        assert_eq!(got[5], f32::INFINITY);
        assert_eq!(got[6], 0.0);
        assert_eq!(got[7], 1.0);
    }
}
