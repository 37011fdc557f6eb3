//! Rotary tables: plain, linear, Llama 3.1 (`llama3`, see `llama3_inv_freq`) and YaRN (Peng et al. 2023) as DeepSeek V2/V3 use
//! it, following transformers' `_compute_yarn_parameters`:
//!
//! - `inv_freq_extra_i = base^(-2i/d)` (pre-training frequencies), `inv_freq_inter_i =
//!   inv_freq_extra_i / factor` (interpolated).
//! - Correction dims `low, high` = `floor/ceil(d · ln(L / (β · 2π)) / (2 ln base))` for
//!   `β = beta_fast, beta_slow`, clamped to `[0, d-1]`, with `L` the original context.
//! - `ramp_i = clamp((i - low) / (high - low), 0, 1)`; the extrapolation weight is `1 - ramp_i`;
//!   `inv_freq = inter · ramp + extra · (1 - ramp)`.
//! - cos/sin are multiplied by the attention factor: `attention_factor` if given, else
//!   `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)` when both are set,
//!   else `get_mscale(factor, 1)`.
//! - The softmax scale `(qk_nope + qk_rope)^-0.5` is multiplied by
//!   `get_mscale(factor, mscale_all_dim)^2` when `mscale_all_dim` is set (non-zero).
//!
//! Arithmetic mirrors the reference's f32 steps (frequencies in f32, angle = position × inv_freq
//! in f32) so tables agree to an ulp.

use frugal_formats::config::{yarn_get_mscale, Rope, RopeScaling};

use crate::ModelError;

/// Inverse frequencies and the cos/sin multiplier of one rope configuration.
#[derive(Clone, Debug)]
pub struct RopeTable {
    inv_freq: Vec<f32>,
    attention_factor: f32,
    interleaved: bool,
}

impl RopeTable {
    /// Build the table for `rope.rotary_dim` dims.
    pub fn new(rope: &Rope) -> Result<Self, ModelError> {
        let dim = rope.rotary_dim;
        if dim == 0 || dim & 1 == 1 {
            return Err(ModelError::UnsupportedConfig {
                what: format!("rope dimension {dim} (must be even and non-zero)"),
            });
        }
        let base = rope.theta as f32;
        let extra: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32))
            .collect();
        let (inv_freq, attention_factor) = match &rope.scaling {
            RopeScaling::None => (extra, 1.0),
            RopeScaling::Linear { factor } => {
                (extra.iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                attention_factor,
            } => {
                let f = *factor;
                let af = match (attention_factor, mscale, mscale_all_dim) {
                    (Some(a), _, _) => *a,
                    (None, Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => {
                        yarn_get_mscale(f, *m) / yarn_get_mscale(f, *ma)
                    }
                    _ => yarn_get_mscale(f, 1.0),
                };
                let beta_fast = if *beta_fast == 0.0 { 32.0 } else { *beta_fast };
                let beta_slow = if *beta_slow == 0.0 { 1.0 } else { *beta_slow };
                let d = dim as f64;
                let len = *original_max_position_embeddings as f64;
                let corr = |rot: f64| {
                    d * (len / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * (rope.theta).ln())
                };
                let low = corr(beta_fast).floor().max(0.0);
                let mut high = corr(beta_slow).ceil().min(d - 1.0);
                if low == high {
                    high += 0.001;
                }
                let (low, high) = (low as f32, high as f32);
                let inv = extra
                    .iter()
                    .enumerate()
                    .map(|(i, &ex)| {
                        let inter = 1.0 / (f as f32 * base.powf((2 * i) as f32 / dim as f32));
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extra_w = 1.0 - ramp;
                        inter * (1.0 - extra_w) + ex * extra_w
                    })
                    .collect();
                (inv, af as f32)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                if *high_freq_factor <= *low_freq_factor || *factor <= 0.0 {
                    return Err(ModelError::UnsupportedConfig {
                        what: format!(
                            "llama3 rope scaling with factor {factor}, low_freq_factor \
                             {low_freq_factor}, high_freq_factor {high_freq_factor}"
                        ),
                    });
                }
                let inv = llama3_inv_freq(
                    &extra,
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *original_max_position_embeddings as f32,
                );
                (inv, 1.0)
            }
            other => {
                return Err(ModelError::UnsupportedConfig {
                    what: format!("rope scaling {other:?}"),
                })
            }
        };
        Ok(RopeTable {
            inv_freq,
            attention_factor,
            interleaved: rope.interleaved,
        })
    }

    /// Divide inverse frequency `i` by `divisors[i]`: llama.cpp's `rope_freqs.weight` (GGUF
    /// Llama 3 stores its rope scaling as these per-frequency factors, not in the config).
    pub fn divide_frequencies(&mut self, divisors: &[f32]) -> Result<(), ModelError> {
        if divisors.len() != self.inv_freq.len() {
            return Err(ModelError::UnsupportedConfig {
                what: format!(
                    "{} rope frequency divisors for {} frequencies",
                    divisors.len(),
                    self.inv_freq.len()
                ),
            });
        }
        self.inv_freq
            .iter_mut()
            .zip(divisors)
            .for_each(|(f, d)| *f /= d);
        Ok(())
    }

    /// Whether pairs are adjacent dims (DeepSeek MLA) rather than halves.
    pub fn interleaved(&self) -> bool {
        self.interleaved
    }

    /// cos and sin (times the attention factor) of every frequency at `pos`.
    pub fn cos_sin(&self, pos: usize) -> (Vec<f32>, Vec<f32>) {
        let n = self.inv_freq.len();
        let (mut cos, mut sin) = (vec![0.0; n], vec![0.0; n]);
        self.cos_sin_into(pos, &mut cos, &mut sin);
        (cos, sin)
    }

    /// [`RopeTable::cos_sin`] into `cos` and `sin` (one value per frequency each).
    pub fn cos_sin_into(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        let p = pos as f32;
        for ((&f, c), s) in self.inv_freq.iter().zip(cos).zip(sin) {
            let a = (p * f) as f64;
            *c = a.cos() as f32 * self.attention_factor;
            *s = a.sin() as f32 * self.attention_factor;
        }
    }
}

/// The cos/sin of several rows' positions (`[rows, frequencies]` each), filled once per
/// forward pass and shared by every layer; the buffers are kept for the next pass.
#[derive(Clone, Debug, Default)]
pub struct RopeRows {
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Frequencies per row.
    width: usize,
}

impl RopeRows {
    /// Hold the cos/sin of `positions` (one row each, in order) from `table`.
    pub fn fill(&mut self, table: &RopeTable, positions: impl Iterator<Item = usize> + Clone) {
        self.width = table.inv_freq.len();
        let rows = positions.clone().count();
        self.cos.resize(rows * self.width, 0.0);
        self.sin.resize(rows * self.width, 0.0);
        let rows = self.cos.chunks_exact_mut(self.width.max(1));
        for ((p, c), s) in positions
            .zip(rows)
            .zip(self.sin.chunks_exact_mut(self.width.max(1)))
        {
            table.cos_sin_into(p, c, s);
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.cos.len() / self.width.max(1)
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.cos.is_empty()
    }

    /// Row `i`'s cos and sin.
    pub fn row(&self, i: usize) -> (&[f32], &[f32]) {
        let at = i * self.width..(i + 1) * self.width;
        (&self.cos[at.clone()], &self.sin[at])
    }
}

/// Llama 3.1 scaling of the inverse frequencies, in f32 as transformers computes it:
/// wavelength `λ = 2π / f`; `λ > L / low` (low frequencies) → `f / factor`; `λ < L / high`
/// (high) → `f`; between → `(1 - s) f / factor + s f` with `s = (L / λ - low) / (high - low)`.
fn llama3_inv_freq(inv_freq: &[f32], factor: f32, low: f32, high: f32, old_len: f32) -> Vec<f32> {
    let low_wavelen = old_len / low;
    let high_wavelen = old_len / high;
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            if wavelen > low_wavelen {
                f / factor
            } else if wavelen < high_wavelen {
                f
            } else {
                let s = (old_len / wavelen - low) / (high - low);
                (1.0 - s) * f / factor + s * f
            }
        })
        .collect()
}

/// The attention softmax scale: `qk_head_dim^-0.5`, times `get_mscale(factor, mscale_all_dim)^2`
/// under YaRN with `mscale_all_dim` set.
pub fn softmax_scale(qk_head_dim: usize, rope: &Rope) -> f32 {
    let mut s = (qk_head_dim as f64).powf(-0.5);
    if let RopeScaling::Yarn {
        factor,
        mscale_all_dim: Some(m),
        ..
    } = &rope.scaling
    {
        if *m != 0.0 {
            let ms = yarn_get_mscale(*factor, *m);
            s *= ms * ms;
        }
    }
    s as f32
}
