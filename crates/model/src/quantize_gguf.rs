//! GGUF → quantized GGUF, as llama.cpp's `llama_model_quantize` does it without an importance
//! matrix: the same metadata (plus `general.quantization_version` and `general.file_type`,
//! moved to the end, split keys dropped), the tensors in llama.cpp's order with the types of
//! [`crate::quant_plan`], each quantized by `frugal_kernels::quant::quantize` (bit-exact with
//! llama.cpp's quantizers), so the output file is byte for byte the one `llama-quantize` writes.
//!
//! With `allow_requantize` (llama.cpp's `--allow-requantize`), quantized input tensors are
//! accepted too: each row is dequantized (`frugal_kernels::quant::dequantize_row`) and
//! quantized again. That loses precision twice (the input's rounding, then the output's), so it
//! is for making a smaller copy of a model whose full-precision weights are not at hand, such as
//! a low-bit fallback for the expert cache, not for a model to ship.

use std::io::Write;

use frugal_formats::gguf::{GgufModel, GgufWriteError, GgufWriter, MetaValue};
use frugal_formats::{DType, TensorSource};
use frugal_kernels::quant::quantize::quantize_rows;
use frugal_kernels::quant::QuantType;

use crate::quant_plan::{plan, PlanError, PlanModel, PlanTensor, Planned, Preset};

/// f32 values decoded at once (64 Mi values = 256 MiB), as llama.cpp works in slabs.
const SLAB_VALUES: usize = 64 << 20;

/// ggml's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Errors of [`quantize_gguf`]; each names the tensor or key concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    /// The plan could not be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Writing the output failed, or a declaration was invalid.
    #[error(transparent)]
    Write(#[from] GgufWriteError),
    /// A tensor to convert whose input type cannot be read as f32 here.
    #[error(
        "tensor '{name}' is {dtype}: only F32, F16 and BF16 tensors can be quantized \
         (requantizing a quantized file loses precision; start from an F32/F16/BF16 GGUF, \
         or pass --allow-requantize)"
    )]
    UnsupportedInput {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: DType,
    },
    /// A target type without a quantizer.
    #[error("tensor '{name}': no quantizer for {dtype}")]
    UnsupportedTarget {
        /// The tensor.
        name: String,
        /// The type.
        dtype: DType,
    },
    /// The kernel refused the data (a shape that is not whole blocks).
    #[error("tensor '{name}': {source}")]
    Kernel {
        /// The tensor.
        name: String,
        /// The kernel's error.
        source: frugal_kernels::quant::QuantError,
    },
}

/// What [`quantize_gguf`] did.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    /// Every tensor with its old and new type, in file order.
    pub tensors: Vec<Planned>,
    /// Tensor data bytes in (without padding).
    pub bytes_in: u64,
    /// Tensor data bytes out (without padding).
    pub bytes_out: u64,
    /// Bytes of the whole output file.
    pub file_bytes: u64,
}

/// The quantization plan for a GGUF model (types per tensor, in output order).
pub fn plan_gguf(model: &GgufModel, preset: Preset) -> Result<Vec<Planned>, QuantizeError> {
    let pm = PlanModel::from_gguf(model.metadata())?;
    let tensors: Vec<PlanTensor> = model
        .files()
        .iter()
        .flat_map(|f| f.gguf_tensors())
        .map(|t| PlanTensor {
            name: t.name.clone(),
            ne: t.ne.clone(),
            dtype: t.dtype,
        })
        .collect();
    Ok(plan(preset, &pm, &tensors)?)
}

/// The element count of `ne`.
fn numel(ne: &[u64]) -> usize {
    ne.iter().product::<u64>() as usize
}

/// Decodes an F32/F16/BF16 tensor's rows (`n` values, `n_per_row` a row) to f32; with
/// `requantize`, also a ggml block type's rows (dequantized).
fn to_f32(
    name: &str,
    dtype: DType,
    data: &[u8],
    n: usize,
    n_per_row: usize,
    requantize: bool,
) -> Result<Vec<f32>, QuantizeError> {
    let mut out = vec![0f32; n];
    let unsupported = || QuantizeError::UnsupportedInput {
        name: name.to_owned(),
        dtype,
    };
    match dtype {
        DType::F32 => frugal_kernels::convert::f32_bytes_to_f32(data, &mut out),
        DType::F16 => frugal_kernels::convert::f16_bytes_to_f32(data, &mut out),
        DType::BF16 => frugal_kernels::convert::bf16_bytes_to_f32(data, &mut out),
        other if requantize => {
            let qt = other
                .ggml_id()
                .and_then(QuantType::from_ggml_id)
                .ok_or_else(unsupported)?;
            let kerr = |source| QuantizeError::Kernel {
                name: name.to_owned(),
                source,
            };
            let row = qt.row_bytes(n_per_row).map_err(kerr)?;
            if n_per_row == 0 || data.len() != row * (n / n_per_row) {
                return Err(unsupported());
            }
            for (src, dst) in data.chunks_exact(row).zip(out.chunks_exact_mut(n_per_row)) {
                frugal_kernels::quant::dequantize_row(qt, src, dst).map_err(kerr)?;
            }
        }
        _ => return Err(unsupported()),
    }
    Ok(out)
}

/// Quantizes `t`'s f32 values `x` to `to`.
pub(crate) fn quantize_tensor(
    name: &str,
    x: &[f32],
    n_per_row: usize,
    to: DType,
    threads: usize,
) -> Result<Vec<u8>, QuantizeError> {
    let qt = to
        .ggml_id()
        .and_then(QuantType::from_ggml_id)
        .filter(|&q| frugal_kernels::quant::quantize::can_quantize(q))
        .ok_or_else(|| QuantizeError::UnsupportedTarget {
            name: name.to_owned(),
            dtype: to,
        })?;
    let kerr = |source| QuantizeError::Kernel {
        name: name.to_owned(),
        source,
    };
    let row = qt.row_bytes(n_per_row).map_err(kerr)?;
    let mut out = vec![0u8; row * (x.len() / n_per_row.max(1))];
    quantize_rows(qt, x, n_per_row, &mut out, threads).map_err(kerr)?;
    Ok(out)
}

/// Quantizes `model` with `preset` into `out`, calling `progress(i, n, name)` before tensor
/// `i` of `n`. Rows are quantized on `threads` threads.
pub fn quantize_gguf<W: Write>(
    model: &GgufModel,
    preset: Preset,
    out: W,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<QuantizeReport, QuantizeError> {
    quantize_in_slabs(model, preset, out, threads, false, progress, SLAB_VALUES)
}

/// [`quantize_gguf`] that also accepts quantized input tensors (`--allow-requantize`): their
/// rows are dequantized, then quantized to the planned type. A tensor whose planned type is
/// its own is copied unchanged, as llama.cpp does.
pub fn requantize_gguf<W: Write>(
    model: &GgufModel,
    preset: Preset,
    out: W,
    threads: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<QuantizeReport, QuantizeError> {
    quantize_in_slabs(model, preset, out, threads, true, progress, SLAB_VALUES)
}

/// [`quantize_gguf`], decoding at most `slab_values` f32 values (whole rows) at a time.
fn quantize_in_slabs<W: Write>(
    model: &GgufModel,
    preset: Preset,
    out: W,
    threads: usize,
    requantize: bool,
    progress: &mut dyn FnMut(usize, usize, &str),
    slab_values: usize,
) -> Result<QuantizeReport, QuantizeError> {
    let planned = plan_gguf(model, preset)?;
    let mut w = GgufWriter::new();
    for (k, v) in model.metadata().iter() {
        if !k.starts_with("split.") {
            w.add_kv(k, v.clone())?;
        }
    }
    w.set_kv(
        "general.quantization_version",
        MetaValue::U32(QUANTIZATION_VERSION),
    )?;
    w.set_kv("general.file_type", MetaValue::U32(preset.file_type()))?;
    for p in &planned {
        w.add_tensor(&p.tensor.name, p.to, &p.tensor.ne)?;
    }
    let mut stream = w.begin(out)?;
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    for (i, p) in planned.iter().enumerate() {
        let t = &p.tensor;
        progress(i, planned.len(), &t.name);
        // OK: every planned tensor comes from the model's own directory.
        let view = model.tensor(&t.name).expect("planned tensors exist");
        bytes_in += view.data.len() as u64;
        if p.to == t.dtype {
            stream.write_tensor(view.data)?;
            bytes_out += view.data.len() as u64;
            continue;
        }
        // A slab of whole rows at a time, so a huge tensor (stacked experts) never needs its
        // whole f32 copy in memory; rows are independent, so the bytes do not change.
        let n_per_row = t.ne[0] as usize;
        let rows = numel(&t.ne).checked_div(n_per_row).unwrap_or(0);
        let src_row = view.data.len().checked_div(rows).unwrap_or(0);
        let slab = (slab_values / n_per_row.max(1)).max(1);
        for r0 in (0..rows).step_by(slab) {
            let r1 = (r0 + slab).min(rows);
            let x = to_f32(
                &t.name,
                t.dtype,
                &view.data[r0 * src_row..r1 * src_row],
                (r1 - r0) * n_per_row,
                n_per_row,
                requantize,
            )?;
            let q = quantize_tensor(&t.name, &x, n_per_row, p.to, threads)?;
            stream.write_tensor_part(&q)?;
            bytes_out += q.len() as u64;
        }
    }
    progress(planned.len(), planned.len(), "");
    let (_, file_bytes) = stream.finish()?;
    Ok(QuantizeReport {
        tensors: planned,
        bytes_in,
        bytes_out,
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabs_do_not_change_the_bytes() {
        let dir = frugal_testdata::fixtures_dir().join("gguf/deepseek-v3");
        let model = GgufModel::open(dir.join("deepseek-v3-F32.gguf")).unwrap();
        let (mut whole, mut rows) = (Vec::new(), Vec::new());
        quantize_in_slabs(
            &model,
            Preset::Q4_K_M,
            &mut whole,
            1,
            false,
            &mut |_, _, _| {},
            usize::MAX,
        )
        .unwrap();
        // One row per slab (stacked experts are hundreds of rows).
        quantize_in_slabs(
            &model,
            Preset::Q4_K_M,
            &mut rows,
            1,
            false,
            &mut |_, _, _| {},
            1,
        )
        .unwrap();
        assert!(whole == rows);
        assert!(whole == std::fs::read(dir.join("deepseek-v3-Q4_K_M.gguf")).unwrap());
    }
}
