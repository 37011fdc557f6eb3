//! An MLP's gate and up projections as one stream: their repacked copies made as one buffer
//! whose groups of rows alternate (`repack::repack_pair`), multiplied for one token group by
//! group (`repack::repacked_gemm_pair`).

use std::ops::Range;
use std::sync::Arc;

use frugal_kernels::cpu::Isa;
use frugal_kernels::quant::{repack, QuantType};

use super::{Linear, Storage, Weights};
use crate::blocks::products::Acts;
use crate::ModelError;

impl<'a> Linear<'a> {
    /// An MLP's gate and up projections (`[rows, cols]` each), their repacked copies made as
    /// one buffer whose groups alternate (`repack::repack_pair`) when both are repacked, so
    /// that [`Linear::product_block_pair`] reads them as one stream; else as [`Linear::load`].
    pub(crate) fn load_pair(
        src: &dyn Weights<'a>,
        (gate, up): (&str, &str),
        rows: usize,
        cols: usize,
        fp8_block: usize,
    ) -> Result<(Self, Self), ModelError> {
        let mut g = Self::load_mapped(src, gate, rows, cols, fp8_block)?;
        let mut u = Self::load_mapped(src, up, rows, cols, fp8_block)?;
        let both = |s: &Storage<'a>| match *s {
            Storage::Quant {
                ty,
                data,
                exact_activations: false,
                ..
            } => Some((ty, data)),
            _ => None,
        };
        let paired = match (both(&g.storage), both(&u.storage)) {
            (Some((tg, dg)), Some((tu, du)))
                if tg == tu
                    && tg != QuantType::Q8_0
                    && repack::worth_repacking(Isa::detect(), tg, cols)
                    && rows >= repack::ROWS
                    && src.repack(gate)
                    && src.repack(up) =>
            {
                repack::repack_pair(tg, dg, du, rows, cols).ok()
            }
            _ => None,
        };
        match paired {
            Some((pg, pu)) => {
                for (lin, p) in [(&mut g, pg), (&mut u, pu)] {
                    if let Storage::Quant { data, repacked, .. } = &mut lin.storage {
                        *repacked = Some(Arc::new(p));
                        src.release(data);
                    }
                }
            }
            None => {
                g.make_copies(src);
                u.make_copies(src);
            }
        }
        Ok((g, u))
    }

    /// [`Linear::product_block`] of `gate` and of `up` over the same `rows` of one token's
    /// `x` (both quantized alike) into `out_gate` and `out_up` (`rows.len()` values each):
    /// for a pair made by [`Linear::load_pair`], each group of gate rows is read just
    /// before the same group of up rows, one sequential stream from memory.
    pub(crate) fn product_block_pair(
        gate: &Self,
        up: &Self,
        x: Acts<'_>,
        rows: Range<usize>,
        out_gate: &mut [f32],
        out_up: &mut [f32],
    ) {
        if let (
            Storage::Quant {
                repacked: Some(g), ..
            },
            Storage::Quant {
                repacked: Some(u), ..
            },
            [act],
        ) = (&gate.storage, &up.storage, x.quantized)
        {
            if g.is_paired_with(u) {
                repack::repacked_gemm_pair(Isa::detect(), (g, u), rows, act, out_gate, out_up)
                    // OK because the pair was made at load from checked rows, and the caller
                    // quantized to Q8_K (`act_format`).
                    .expect("paired rows and activations checked");
                return;
            }
        }
        let n = rows.len();
        gate.product_block(x, rows.clone(), out_gate, n);
        up.product_block(x, rows, out_up, n);
    }
}
