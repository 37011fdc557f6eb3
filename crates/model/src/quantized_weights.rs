//! Quantize on load: a [`TensorSource`] that holds quantized copies of a checkpoint's matrices
//! and passes every other tensor through, so `Model::from_parts(config, &qw)` runs a
//! safetensors model (F32, F16, BF16 or block-scaled FP8) with quantized weights, the `Linear`
//! layers reading them exactly as they read a quantized GGUF.
//!
//! Which tensors, as llama.cpp's quantizer chooses on the same model (Hugging Face names
//! here): every 2-D `*.weight` except norms and MoE routers (`mlp.gate`,
//! `block_sparse_moe.gate`) — so the embeddings and `lm_head` too. A matrix whose rows are
//! not whole blocks of the type takes llama.cpp's fallback (Q4_K → Q5_0, Q5_K → Q5_1,
//! Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, IQ4_XS → IQ4_NL, else F16). One type for all matrices: this
//! is `--quant TYPE`, not a preset's mix (see [`crate::quant_plan`] for those). FP8 weights
//! are first decoded with their `weight_scale_inv` blocks, as llama.cpp's converter does.
//!
//! The quantizer is llama.cpp's (`frugal_kernels::quant::quantize`), so a Q8_0 matrix here is
//! byte for byte the Q8_0 tensor `llama-quantize` writes for it (checked in the tests).

use std::collections::HashMap;

use frugal_formats::config::{ModelConfig, WeightQuantization};
use frugal_formats::{DType, TensorInfo, TensorSource, TensorView};
use frugal_kernels::quant::quantize::can_quantize;
use frugal_kernels::quant::QuantType;

use crate::quantize_gguf::{quantize_tensor, QuantizeError};

/// A quantized tensor this source owns.
struct Owned {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A tensor source whose matrices are quantized copies (see the module doc).
pub struct QuantizedWeights<'a> {
    inner: &'a dyn TensorSource,
    owned: HashMap<String, Owned>,
}

/// Whether an HF tensor is one llama.cpp would quantize (2-D weight, not a norm or router).
fn is_quantized_matrix(info: &TensorInfo) -> bool {
    let n = &info.name;
    info.shape.len() == 2
        && n.ends_with(".weight")
        && !n.contains("norm")
        && !n.ends_with("mlp.gate.weight")
        && !n.ends_with("block_sparse_moe.gate.weight")
        && matches!(
            info.dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3
        )
}

impl<'a> QuantizedWeights<'a> {
    /// Quantizes every matrix of `src` (see the module doc) to `ty` on `threads` threads,
    /// calling `progress(done, total)` after each. Errors name the tensor.
    pub fn new(
        config: &ModelConfig,
        src: &'a dyn TensorSource,
        ty: QuantType,
        threads: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<QuantizedWeights<'a>, QuantizeError> {
        let target = DType::from_ggml_id(ty.ggml_id())
            .filter(|_| can_quantize(ty))
            .ok_or_else(|| QuantizeError::UnsupportedTarget {
                name: "(all matrices)".into(),
                dtype: DType::from_ggml_id(ty.ggml_id()).unwrap_or(DType::F32),
            })?;
        let fp8_block = match &config.weight_quantization {
            Some(WeightQuantization::Fp8 {
                block_size: Some([b, _]),
                ..
            }) => *b,
            _ => 128,
        };
        let infos: Vec<TensorInfo> = src
            .tensor_infos()
            .into_iter()
            .filter(is_quantized_matrix)
            .collect();
        let mut owned = HashMap::new();
        for (i, info) in infos.iter().enumerate() {
            let (rows, cols) = (info.shape[0], info.shape[1]);
            let to = crate::quant_plan::fallback(target, cols as u64).0;
            // OK: the name comes from the source's own listing.
            let t = src.tensor(&info.name).expect("listed tensors exist");
            let x = decode(src, &t, rows, cols, fp8_block)?;
            let data = quantize_tensor(&info.name, &x, cols, to, threads)?;
            owned.insert(
                info.name.clone(),
                Owned {
                    dtype: to,
                    shape: info.shape.clone(),
                    data,
                },
            );
            progress(i + 1, infos.len());
        }
        Ok(QuantizedWeights { inner: src, owned })
    }

    /// (name, type) of every tensor this source quantized.
    pub fn quantized(&self) -> impl Iterator<Item = (&str, DType)> {
        self.owned.iter().map(|(k, v)| (k.as_str(), v.dtype))
    }
}

/// A matrix as f32: F32/F16/BF16 converted, FP8 decoded with its block scales.
fn decode(
    src: &dyn TensorSource,
    t: &TensorView<'_>,
    rows: usize,
    cols: usize,
    block: usize,
) -> Result<Vec<f32>, QuantizeError> {
    use frugal_kernels::convert as cv;
    let n = rows * cols;
    let mut out = vec![0f32; n];
    let bad = |dtype| QuantizeError::UnsupportedInput {
        name: t.name.to_owned(),
        dtype,
    };
    let want = |bytes: usize, dtype| {
        if t.data.len() == bytes {
            Ok(())
        } else {
            Err(bad(dtype))
        }
    };
    match t.dtype {
        DType::F32 => {
            want(n * 4, DType::F32)?;
            cv::f32_bytes_to_f32(t.data, &mut out)
        }
        DType::F16 => {
            want(n * 2, DType::F16)?;
            cv::f16_bytes_to_f32(t.data, &mut out)
        }
        DType::BF16 => {
            want(n * 2, DType::BF16)?;
            cv::bf16_bytes_to_f32(t.data, &mut out)
        }
        DType::F8E4M3 => {
            want(n, DType::F8E4M3)?;
            let scale_name = format!("{}_scale_inv", t.name);
            let s = src.tensor(&scale_name).ok_or_else(|| bad(DType::F8E4M3))?;
            let n_scales = rows.div_ceil(block) * cols.div_ceil(block);
            let mut scales = vec![0f32; n_scales];
            match s.dtype {
                DType::F32 if s.data.len() == n_scales * 4 => {
                    cv::f32_bytes_to_f32(s.data, &mut scales)
                }
                DType::BF16 if s.data.len() == n_scales * 2 => {
                    cv::bf16_bytes_to_f32(s.data, &mut scales)
                }
                other => {
                    return Err(QuantizeError::UnsupportedInput {
                        name: scale_name,
                        dtype: other,
                    })
                }
            }
            cv::dequant_fp8_block_rows(t.data, &scales, cols, block, 0..rows, &mut out);
        }
        other => return Err(bad(other)),
    }
    Ok(out)
}

impl TensorSource for QuantizedWeights<'_> {
    fn tensor_infos(&self) -> Vec<TensorInfo> {
        self.inner
            .tensor_infos()
            .into_iter()
            .map(|mut i| {
                if let Some(o) = self.owned.get(&i.name) {
                    i.dtype = o.dtype;
                    i.nbytes = o.data.len();
                }
                i
            })
            .collect()
    }

    fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        match self.owned.get_key_value(name) {
            Some((k, o)) => Some(TensorView {
                name: k,
                dtype: o.dtype,
                shape: o.shape.clone(),
                data: &o.data,
            }),
            None => self.inner.tensor(name),
        }
    }

    fn populate(&self, bytes: &[u8]) {
        // Bytes of an owned (quantized here) tensor are not the inner source's: it ignores them.
        self.inner.populate(bytes);
    }
}
