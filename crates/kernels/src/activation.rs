//! Activations: SiLU (`x * sigmoid(x)`, also "swish") and the SwiGLU product
//! `silu(gate) * up` of gated MLPs (Shazeer 2020).

/// SiLU of one value.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `gate[i] = silu(gate[i]) * up[i]`, in place in `gate`.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu_inplace: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
