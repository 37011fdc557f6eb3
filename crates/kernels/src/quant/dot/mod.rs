//! Dot products of quantized weight rows with quantized activations: the inner loop of every
//! quantized matrix-vector product.
//!
//! [`vec_dot`] multiplies one weight row of a [`QuantType`] by activations already in that
//! type's [`ActFormat`] ([`QuantizedActs`]), on a chosen [`Isa`]. Each type has a scalar
//! reference (`Isa::Scalar`: exact integer sums per block, then the block's float scales, in
//! llama.cpp's order) and SIMD paths; the integer parts are exact on every path, so paths
//! differ only in the order of the f32 additions across blocks (tested in
//! `tests/dot_simd.rs`).
//!
//! Files: `legacy.rs` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4 against Q8_0/Q8_1),
//! `kquants.rs` (Q2_K … Q6_K, IQ4_XS against Q8_K), `float.rs` (F32, F16, BF16 against f32).

mod float;
mod kquants;
mod legacy;

#[allow(unused_imports)] // Named in the docs.
use super::act::ActFormat;
use super::act::QuantizedActs;
use super::{as_blocks, QuantBlock, QuantError, QuantType};
use crate::cpu::Isa;

/// `Σ w·x` of one weight row `row` (type `ty`, `acts.len()` weights) with `acts`, on `isa`
/// (which must be available: see [`Isa::is_available`]; an unavailable one runs scalar).
///
/// Errors: a type without kernels, activations not in `ty.act_format()`, a row of the wrong
/// byte length.
pub fn vec_dot(
    isa: Isa,
    ty: QuantType,
    row: &[u8],
    acts: &QuantizedActs,
) -> Result<f32, QuantError> {
    let format = ty
        .act_format()
        .ok_or(QuantError::Unsupported { ty: ty.name() })?;
    if acts.format() != format {
        return Err(QuantError::ActFormat {
            ty: ty.name(),
            expected: format,
            got: acts.format(),
        });
    }
    let expected = ty.row_bytes(acts.len())?;
    if row.len() != expected {
        return Err(QuantError::ByteLength {
            ty: ty.name(),
            n: acts.len(),
            expected,
            got: row.len(),
        });
    }
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    dot_checked(isa, ty, row, acts)
}

/// [`vec_dot`] after its checks (and `isa` known available).
fn dot_checked(
    isa: Isa,
    ty: QuantType,
    row: &[u8],
    acts: &QuantizedActs,
) -> Result<f32, QuantError> {
    use QuantType::*;
    Ok(match ty {
        F32 => float::f32(isa, row, acts.f32s()),
        F16 => float::f16(isa, row, acts.f32s()),
        BF16 => float::bf16(isa, row, acts.f32s()),
        Q4_0 => legacy::q4_0(isa, blocks(row), acts.q8_0()),
        Q4_1 => legacy::q4_1(isa, blocks(row), acts.q8_1()),
        Q5_0 => legacy::q5_0(isa, blocks(row), acts.q8_0()),
        Q5_1 => legacy::q5_1(isa, blocks(row), acts.q8_1()),
        Q8_0 => legacy::q8_0(isa, blocks(row), acts.q8_0()),
        IQ4NL => legacy::iq4_nl(isa, blocks(row), acts.q8_0()),
        MXFP4 => legacy::mxfp4(isa, blocks(row), acts.q8_0()),
        Q2K => kquants::q2_k(isa, blocks(row), acts.q8k()),
        Q3K => kquants::q3_k(isa, blocks(row), acts.q8k()),
        Q4K => kquants::q4_k(isa, blocks(row), acts.q8k()),
        Q5K => kquants::q5_k(isa, blocks(row), acts.q8k()),
        Q6K => kquants::q6_k(isa, blocks(row), acts.q8k()),
        IQ4XS => kquants::iq4_xs(isa, blocks(row), acts.q8k()),
        other => return Err(QuantError::Unsupported { ty: other.name() }),
    })
}

/// A block of a quantized matrix product: for each weight row `r` of `rows` (`n` rows of type
/// `ty`, each `ty.row_bytes(k)` bytes, back to back) and each activation row `t` of `acts`
/// (all `k` long, in `ty.act_format()`), `out[t * out_stride + r] = Σ W[r]·A[t]`.
///
/// Every value equals [`vec_dot`]`(isa, ty, row, acts[t])` bit for bit, whatever the tiling,
/// so a product's result does not depend on how many tokens share it. The checks run once per
/// call, not per row.
///
/// Errors: as [`vec_dot`]; `rows` not whole rows; activations of different lengths; `out` too
/// short for `acts.len()` rows of stride `out_stride ≥ n`.
pub fn gemm(
    isa: Isa,
    ty: QuantType,
    rows: &[u8],
    acts: &[QuantizedActs],
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), QuantError> {
    let Some(first) = acts.first() else {
        return Ok(());
    };
    let k = first.len();
    let format = ty
        .act_format()
        .ok_or(QuantError::Unsupported { ty: ty.name() })?;
    check_acts(ty, format, acts, k)?;
    let row_bytes = ty.row_bytes(k)?;
    if row_bytes == 0 || !rows.len().is_multiple_of(row_bytes) {
        return Err(QuantError::ByteLength {
            ty: ty.name(),
            n: k,
            expected: row_bytes,
            got: rows.len(),
        });
    }
    let n = rows.len() / row_bytes;
    check_out(out, acts.len(), n, out_stride)?;
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    if kquants::gemm(isa, ty, rows, acts, out, out_stride)
        || legacy::gemm(isa, ty, rows, acts, out, out_stride)
    {
        return Ok(());
    }
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (t, a) in acts.iter().enumerate() {
            out[t * out_stride + r] = dot_checked(isa, ty, row, a)?;
        }
    }
    Ok(())
}

/// Calls `f` with every activation row's blocks (`view` of each), gathered on the stack for up
/// to 16 rows, so a decode step's products allocate nothing; in a `Vec` beyond.
#[allow(dead_code)] // Used by the x86 tiled paths only.
pub(crate) fn with_act_blocks<'a, B, R>(
    acts: &'a [QuantizedActs],
    view: fn(&'a QuantizedActs) -> &'a [B],
    f: impl FnOnce(&[&'a [B]]) -> R,
) -> R {
    const STACK: usize = 16;
    if acts.len() <= STACK {
        let mut rows: [&[B]; STACK] = [&[]; STACK];
        for (r, a) in rows.iter_mut().zip(acts) {
            *r = view(a);
        }
        f(&rows[..acts.len()])
    } else {
        let rows: Vec<&[B]> = acts.iter().map(view).collect();
        f(&rows)
    }
}

/// A product's activation rows: all in `format` (the weight type `ty`'s) and `k` long.
pub(crate) fn check_acts(
    ty: QuantType,
    format: ActFormat,
    acts: &[QuantizedActs],
    k: usize,
) -> Result<(), QuantError> {
    for a in acts {
        if a.format() != format {
            return Err(QuantError::ActFormat {
                ty: ty.name(),
                expected: format,
                got: a.format(),
            });
        }
        if a.len() != k {
            return Err(QuantError::Shape {
                what: format!(
                    "activation rows of {} values for weight rows of {k}",
                    a.len()
                ),
            });
        }
    }
    Ok(())
}

/// A product's output: `t` rows of `n` values, `stride` apart, fit in `out`.
pub(crate) fn check_out(out: &[f32], t: usize, n: usize, stride: usize) -> Result<(), QuantError> {
    if t > 0 && (stride < n || out.len() < (t - 1) * stride + n) {
        return Err(QuantError::Shape {
            what: format!(
                "output of {} values for {t} × {n} with stride {stride}",
                out.len()
            ),
        });
    }
    Ok(())
}

/// The row as blocks; `vec_dot` checked its length.
fn blocks<B: QuantBlock>(row: &[u8]) -> &[B] {
    // OK because `vec_dot` checked `row.len() == row_bytes(n)`.
    as_blocks(row).expect("row length checked")
}

/// Reference for paths not written yet: dequantize both sides and dot in f32 (block by
/// block). Kept only until each type's integer reference lands.
#[allow(dead_code)]
fn dequantized_dot<W: QuantBlock, A: QuantBlock>(w: &[W], a: &[A]) -> f32 {
    let n = W::BLOCK_SIZE.max(A::BLOCK_SIZE);
    let mut wf = vec![0.0f32; w.len() * W::BLOCK_SIZE];
    let mut af = vec![0.0f32; a.len() * A::BLOCK_SIZE];
    for (b, o) in w.iter().zip(wf.chunks_exact_mut(W::BLOCK_SIZE)) {
        b.dequantize(o);
    }
    for (b, o) in a.iter().zip(af.chunks_exact_mut(A::BLOCK_SIZE)) {
        b.dequantize(o);
    }
    wf.chunks(n)
        .zip(af.chunks(n))
        .map(|(w, a)| w.iter().zip(a).map(|(w, a)| w * a).sum::<f32>())
        .sum()
}
