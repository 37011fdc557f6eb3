//! A linear layer `y = W x` reading its weight straight from the mapped checkpoint.
//!
//! `W` is `[rows, cols]` (PyTorch `[out, in]`) stored as F32, BF16, F16, or FP8 e4m3 with a
//! DeepSeek block scale tensor `<name>_scale_inv` (`[ceil(rows/b), ceil(cols/b)]`, f32 or bf16;
//! dequantised `w = fp8 × scale` of its `b × b` block). Rows are decoded to f32 on the fly with
//! [`frugal_kernels::convert`], a few at a time, so the model is never materialised in f32.
//!
//! GGUF's quantized block types (Q8_0, Q4_K, ... see [`frugal_kernels::quant`]) are kept as
//! stored. By default each input row is quantized once per product to the weight type's
//! activation format (Q8_0, Q8_1 or Q8_K, as llama.cpp does: `QuantType::act_format`), and each
//! output value is the integer dot product `quant::dot::vec_dot` of one quantized row with it, on
//! the best instruction set of the CPU. With exact activations (a [`Weights`] source that asks
//! for them: `LoadOptions::exact_activations`), each output value is instead `vec_dot_row(row
//! bytes, x)`, the fused dot product with f32 activations (weights dequantized exactly,
//! activations never rounded), which is what transformers computes on the dequantized weights.
//!
//! Each block of rows is one `quant::gemm` call (checks once per call; every value equal to
//! `vec_dot`). Large products are split over threads by blocks of rows (`super::products`, on
//! the persistent [`frugal_kernels::pool::ThreadPool`]); each output value is one row's dot
//! product, so the result does not depend on the thread count.

use std::ops::Range;
use std::sync::Arc;

use frugal_formats::{DType, TensorSource, TensorView};
use frugal_kernels::cpu::Isa;
use frugal_kernels::hugemem::HugeBuf;
use frugal_kernels::quant::repack::{self, Repacked};
use frugal_kernels::quant::{self, ActFormat, QuantType};
use frugal_kernels::{convert, matmul};

use super::products::{self, Acts};
use crate::ModelError;

/// Below this many multiply-adds a product runs on the calling thread: handing it to the
/// pool costs more.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 18;

/// How a weight's elements are stored.
#[derive(Clone, Debug)]
enum Storage<'a> {
    /// f32 rows; `copy`: the same bytes in huge-page backed memory, read instead of `data`
    /// when the source asked for owned copies.
    F32 {
        data: &'a [u8],
        copy: Option<Arc<HugeBuf>>,
    },
    Bf16(&'a [u8]),
    F16(&'a [u8]),
    /// A ggml block type: each row is `row_bytes` bytes of whole blocks. `exact_activations`:
    /// multiply by f32 activations instead of quantizing them (see the module doc).
    Quant {
        ty: QuantType,
        data: &'a [u8],
        row_bytes: usize,
        exact_activations: bool,
        /// The rows interleaved eight by eight (`quant::repack`), when the source asked for
        /// it: products with quantized activations then read only this copy, never `data`.
        repacked: Option<Arc<Repacked>>,
        /// The rows as stored, copied into huge-page backed memory (`hugemem`), when the
        /// source asked for an owned copy and the type has no repacked layout (Q8_0, Q5_K, …):
        /// products and row decoding read it instead of `data`. Why: the file's map is made
        /// of 4 KiB pages, and streaming it costs a TLB walk every 4 KiB.
        copy: Option<Arc<HugeBuf>>,
    },
    Fp8 {
        data: &'a [u8],
        /// `[ceil(rows/block), ceil(cols/block)]` multipliers, still in the file (f32 or bf16
        /// bytes): a 671B checkpoint's scales are ~160 MB, read only for the experts used.
        scale: ScaleBytes<'a>,
        block: usize,
    },
}

/// An FP8 weight's block scales as stored.
#[derive(Clone, Copy, Debug)]
enum ScaleBytes<'a> {
    F32(&'a [u8]),
    Bf16(&'a [u8]),
}

impl ScaleBytes<'_> {
    /// Decode scale row `i` (`n` values) into `out`.
    fn row(&self, i: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            ScaleBytes::F32(d) => convert::f32_bytes_to_f32(&d[i * n * 4..(i + 1) * n * 4], out),
            ScaleBytes::Bf16(d) => convert::bf16_bytes_to_f32(&d[i * n * 2..(i + 1) * n * 2], out),
        }
    }
}

/// A `[rows, cols]` weight matrix.
#[derive(Debug)]
pub struct Linear<'a> {
    /// Shared, so that a rebased view ([`Linear::rebased`]) costs no allocation.
    name: Arc<str>,
    rows: usize,
    cols: usize,
    storage: Storage<'a>,
}

/// Where blocks find their weights by checkpoint (Hugging Face) name: any [`TensorSource`]
/// (through `&source`), or a renaming view such as a GGUF file's (`crate::gguf_names`). The
/// views live as long as `'a`, not as long as the borrow of `self`, so an adapter made while
/// loading need not outlive the model.
pub trait Weights<'a>: Sync {
    /// The tensor called `name`, if any.
    fn tensor(&self, name: &str) -> Option<TensorView<'a>>;

    /// Whether quantized weights from here multiply f32 activations (exact, slow) rather than
    /// activations quantized to 8 bits (llama.cpp's way, the default).
    fn exact_activations(&self) -> bool {
        false
    }

    /// Whether the quantized matrix `name` should be kept as an owned copy: row-interleaved
    /// (`quant::repack`: faster one-token products) where its type has that layout, else as
    /// stored in huge-page backed memory; the mapped bytes are then no longer read.
    fn repack(&self, _name: &str) -> bool {
        false
    }

    /// Told that `bytes` (a view from [`Weights::tensor`]) were copied and will not be read
    /// again soon ([`TensorSource::release`]).
    fn release(&self, _bytes: &[u8]) {}

    /// Told that `bytes` (a view from [`Weights::tensor`]) will be read a row at a time at
    /// random while the model runs ([`TensorSource::populate`]).
    fn populate(&self, _bytes: &[u8]) {}
}

impl<'a, T: TensorSource + ?Sized> Weights<'a> for &'a T {
    fn tensor(&self, name: &str) -> Option<TensorView<'a>> {
        (**self).tensor(name)
    }

    fn populate(&self, bytes: &[u8]) {
        (**self).populate(bytes);
    }
}

/// Fetch a tensor or say which one is missing.
pub(crate) fn get<'a>(src: &dyn Weights<'a>, name: &str) -> Result<TensorView<'a>, ModelError> {
    src.tensor(name).ok_or_else(|| ModelError::MissingTensor {
        name: name.to_string(),
    })
}

/// Check a tensor's shape.
pub(crate) fn check_shape(t: &TensorView<'_>, expected: &[usize]) -> Result<(), ModelError> {
    if t.shape != expected {
        return Err(ModelError::WrongShape {
            name: t.name.to_string(),
            expected: expected.to_vec(),
            found: t.shape.clone(),
        });
    }
    Ok(())
}

/// Decode a small tensor (norm weights, biases, scales) of shape `shape` into f32.
pub(crate) fn load_f32_vec(
    src: &dyn Weights<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    let t = get(src, name)?;
    check_shape(&t, shape)?;
    let n = t.numel();
    let elem = match t.dtype {
        DType::F32 => 4,
        DType::BF16 | DType::F16 => 2,
        dtype => {
            return Err(ModelError::UnsupportedDtype {
                name: name.to_string(),
                dtype,
            })
        }
    };
    check_bytes(&t, n * elem)?;
    let mut out = vec![0.0f32; n];
    match t.dtype {
        DType::F32 => convert::f32_bytes_to_f32(t.data, &mut out),
        DType::BF16 => convert::bf16_bytes_to_f32(t.data, &mut out),
        _ => convert::f16_bytes_to_f32(t.data, &mut out),
    }
    Ok(out)
}

fn check_bytes(t: &TensorView<'_>, expected: usize) -> Result<(), ModelError> {
    if t.data.len() != expected {
        return Err(ModelError::WrongByteSize {
            name: t.name.to_string(),
            expected,
            found: t.data.len(),
        });
    }
    Ok(())
}

impl<'a> Linear<'a> {
    /// Load `name` from `src`, checking it is `[rows, cols]`. FP8 weights need
    /// `<name>_scale_inv`; `fp8_block` is the scale block edge (128 for DeepSeek).
    pub fn load(
        src: &dyn Weights<'a>,
        name: &str,
        rows: usize,
        cols: usize,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        let mut lin = Self::load_mapped(src, name, rows, cols, fp8_block)?;
        lin.make_copies(src);
        Ok(lin)
    }

    /// Load `name` as [`Linear::load`] does, but reading the mapped bytes only: no repacked
    /// or huge-page copy yet ([`Linear::make_copies`]).
    fn load_mapped(
        src: &dyn Weights<'a>,
        name: &str,
        rows: usize,
        cols: usize,
        fp8_block: usize,
    ) -> Result<Self, ModelError> {
        let t = get(src, name)?;
        check_shape(&t, &[rows, cols])?;
        let n = rows * cols;
        let storage = match t.dtype {
            DType::F32 => {
                check_bytes(&t, n * 4)?;
                Storage::F32 {
                    data: t.data,
                    copy: None,
                }
            }
            DType::BF16 => {
                check_bytes(&t, n * 2)?;
                Storage::Bf16(t.data)
            }
            DType::F16 => {
                check_bytes(&t, n * 2)?;
                Storage::F16(t.data)
            }
            DType::F8E4M3 => {
                check_bytes(&t, n)?;
                let scale_name = format!("{name}_scale_inv");
                let block = fp8_block.max(1);
                let st = get(src, &scale_name)?;
                let n_scales = rows.div_ceil(block) * cols.div_ceil(block);
                check_shape(&st, &[rows.div_ceil(block), cols.div_ceil(block)])?;
                let scale = match st.dtype {
                    DType::F32 => {
                        check_bytes(&st, n_scales * 4)?;
                        ScaleBytes::F32(st.data)
                    }
                    DType::BF16 => {
                        check_bytes(&st, n_scales * 2)?;
                        ScaleBytes::Bf16(st.data)
                    }
                    dtype => {
                        return Err(ModelError::UnsupportedDtype {
                            name: scale_name,
                            dtype,
                        })
                    }
                };
                Storage::Fp8 {
                    data: t.data,
                    scale,
                    block,
                }
            }
            dtype => {
                // The file's own name (a GGUF's differs from the Hugging Face one asked for).
                let unsupported = || ModelError::UnsupportedDtype {
                    name: t.name.to_string(),
                    dtype,
                };
                let ty = dtype
                    .ggml_id()
                    .and_then(QuantType::from_ggml_id)
                    .filter(|q| q.is_supported())
                    .ok_or_else(unsupported)?;
                // A row must be whole blocks: `row_bytes` refuses `cols` not a multiple.
                let row_bytes = ty.row_bytes(cols).map_err(|_| unsupported())?;
                let total = row_bytes.checked_mul(rows).ok_or_else(unsupported)?;
                check_bytes(&t, total)?;
                Storage::Quant {
                    ty,
                    data: t.data,
                    row_bytes,
                    exact_activations: src.exact_activations(),
                    repacked: None,
                    copy: None,
                }
            }
        };
        Ok(Linear {
            name: name.into(),
            rows,
            cols,
            storage,
        })
    }

    /// Output size (rows of `W`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Makes the owned copies the source asks for (`Weights::repack`): a quantized matrix
    /// row-interleaved where that product applies and is faster (Q4_K on an x86 SIMD path,
    /// Q6_K with VNNI, short Q8_0 rows; quantized activations, at least one group of rows;
    /// it equals the plain one bit for bit; a Q6_K `lm_head` too: 86 MB of scaled DeepSeek's
    /// 375 MB per token, and tg128 was faster with it repacked in 5 of 6 alternating runs,
    /// median +2%), else a plain copy in huge pages; an F32 matrix (MoE routers in GGUF
    /// files, 6.8 MB of scaled DeepSeek's 375 MB per token) in huge pages too (router time
    /// per token 0.48 → 0.32 ms at one thread). The mapped bytes are then released.
    fn make_copies(&mut self, src: &dyn Weights<'a>) {
        if !src.repack(&self.name) {
            return;
        }
        let (rows, cols) = (self.rows, self.cols);
        let released = match &mut self.storage {
            Storage::F32 { data, copy } => {
                *copy = HugeBuf::copy_of(data).ok().map(Arc::new);
                copy.is_some().then_some(*data)
            }
            Storage::Quant {
                ty,
                data,
                exact_activations,
                repacked,
                copy,
                ..
            } => {
                if repack::worth_repacking(Isa::detect(), *ty, cols)
                    && !*exact_activations
                    && rows >= repack::ROWS
                {
                    *repacked = repack::repack(*ty, data, rows, cols).ok().map(Arc::new);
                }
                if repacked.is_none() {
                    *copy = HugeBuf::copy_of(data).ok().map(Arc::new);
                }
                (repacked.is_some() || copy.is_some()).then_some(*data)
            }
            _ => None,
        };
        if let Some(data) = released {
            // Products read the copy now; the mapped pages need not stay resident.
            src.release(data);
        }
    }

    /// Input size (columns of `W`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The checkpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight's bytes as stored (for FP8, without the block scales): a view into the mapped
    /// file, unless the matrix came from memory.
    pub fn stored_data(&self) -> &'a [u8] {
        match &self.storage {
            Storage::Bf16(d) | Storage::F16(d) => d,
            Storage::F32 { data, .. } | Storage::Quant { data, .. } | Storage::Fp8 { data, .. } => {
                data
            }
        }
    }

    /// Whether [`Linear::decode_rows`] reads [`Linear::stored_data`] (rather than an owned
    /// copy made at load).
    pub(crate) fn decodes_stored_data(&self) -> bool {
        match &self.storage {
            Storage::F32 { copy, .. } | Storage::Quant { copy, .. } => copy.is_none(),
            Storage::Bf16(_) | Storage::F16(_) | Storage::Fp8 { .. } => true,
        }
    }

    /// The same matrix over another copy of its stored bytes (`data` must equal
    /// [`Linear::stored_data`] byte for byte in layout and length): how an expert cache hands
    /// the MoE block weights it read into its own memory. FP8 block scales stay where they
    /// were. `None` if `data` has the wrong length.
    pub fn rebased<'b>(&self, data: &'b [u8]) -> Option<Linear<'b>>
    where
        'a: 'b,
    {
        if data.len() != self.stored_data().len() {
            return None;
        }
        let storage = match &self.storage {
            Storage::F32 { .. } => Storage::F32 { data, copy: None },
            Storage::Bf16(_) => Storage::Bf16(data),
            Storage::F16(_) => Storage::F16(data),
            Storage::Quant {
                ty,
                row_bytes,
                exact_activations,
                ..
            } => Storage::Quant {
                ty: *ty,
                data,
                row_bytes: *row_bytes,
                exact_activations: *exact_activations,
                // The new bytes are in the file's layout; a repacked copy would be stale.
                repacked: None,
                copy: None,
            },
            Storage::Fp8 { scale, block, .. } => Storage::Fp8 {
                data,
                scale: *scale,
                block: *block,
            },
        };
        Some(Linear {
            name: self.name.clone(),
            rows: self.rows,
            cols: self.cols,
            storage,
        })
    }

    /// [`Linear::stored_bytes`] per row (rounded down): what one row's product reads, the
    /// measure by which parallel steps balance their work items.
    pub fn row_bytes(&self) -> usize {
        self.stored_bytes() / self.rows().max(1)
    }

    /// Bytes of the weight as stored (the mapped data, plus FP8 block scales): what reading
    /// this matrix from disk costs.
    pub fn stored_bytes(&self) -> usize {
        match &self.storage {
            Storage::Bf16(d) | Storage::F16(d) => d.len(),
            Storage::F32 { data, .. } | Storage::Quant { data, .. } => data.len(),
            Storage::Fp8 { data, scale, .. } => {
                data.len()
                    + match scale {
                        ScaleBytes::F32(s) | ScaleBytes::Bf16(s) => s.len(),
                    }
            }
        }
    }

    /// Decode rows `rows` of `W` into `out` (`rows.len() * cols` values).
    pub fn decode_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let c = self.cols;
        assert!(
            rows.end <= self.rows,
            "decode_rows: {} past the end",
            self.name
        );
        assert_eq!(out.len(), rows.len() * c, "decode_rows: out length");
        match &self.storage {
            Storage::F32 { data, copy } => {
                let d: &[u8] = copy.as_deref().map_or(data, |c| c);
                convert::f32_bytes_to_f32(&d[rows.start * c * 4..rows.end * c * 4], out)
            }
            Storage::Bf16(d) => {
                convert::bf16_bytes_to_f32(&d[rows.start * c * 2..rows.end * c * 2], out)
            }
            Storage::F16(d) => {
                convert::f16_bytes_to_f32(&d[rows.start * c * 2..rows.end * c * 2], out)
            }
            Storage::Quant {
                ty,
                data,
                row_bytes,
                copy,
                ..
            } => {
                let data: &[u8] = copy.as_deref().map_or(data, |c| c);
                for (r, o) in rows.zip(out.chunks_exact_mut(c)) {
                    quant::dequantize_row(*ty, &data[r * row_bytes..(r + 1) * row_bytes], o)
                        // OK because `load` checked the type is supported and the row length.
                        .expect("quantized row checked at load");
                }
            }
            Storage::Fp8 { data, scale, block } => {
                // One row of block scales at a time; `w = fp8 × scale[r / b][c / b]`.
                let mut srow = vec![0.0f32; c.div_ceil(*block)];
                let mut srow_at = usize::MAX;
                for (i, r) in rows.enumerate() {
                    if r / block != srow_at {
                        srow_at = r / block;
                        scale.row(srow_at, &mut srow);
                    }
                    convert::dequant_fp8_block_rows(
                        &data[r * c..(r + 1) * c],
                        &srow,
                        c,
                        *block,
                        0..1,
                        &mut out[i * c..(i + 1) * c],
                    );
                }
            }
        }
    }

    /// `Y = X W^T`: `x` is `[t, cols]`, the result `[t, rows]`, both row-major. Uses up to
    /// `threads` threads when the product is large.
    pub fn forward(&self, x: &[f32], threads: usize) -> Vec<f32> {
        assert_eq!(
            x.len() % self.cols,
            0,
            "{}: input is not [t, {}]",
            self.name,
            self.cols
        );
        let mut y = vec![0.0f32; x.len() / self.cols * self.rows];
        self.forward_into(x, &mut y, threads);
        y
    }

    /// [`Linear::forward`] into `y` (`[t, rows]`).
    pub fn forward_into(&self, x: &[f32], y: &mut [f32], threads: usize) {
        products::forward_many(&[self], x, &mut [y], threads);
    }

    /// `Y = X W[rows]^T` for a block of rows only, on the calling thread: `x` is `[t, cols]`,
    /// the result `[t, rows.len()]`. A view of part of a stacked weight (one attention head's
    /// slice of a per-head projection), computed as [`Linear::forward`] computes those rows
    /// (quantized weights on the fast path: `x` quantized once here), with no weight copied.
    /// The caller parallelises, e.g. over heads.
    pub fn forward_rows(&self, rows: Range<usize>, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len() / self.cols.max(1) * rows.len()];
        self.forward_rows_into(rows, x, &mut out);
        out
    }

    /// [`Linear::forward_rows`] into `out` (`[t, rows.len()]`).
    pub(crate) fn forward_rows_into(&self, rows: Range<usize>, x: &[f32], out: &mut [f32]) {
        assert!(
            rows.end <= self.rows && rows.start <= rows.end,
            "{}: rows {rows:?} past {}",
            self.name,
            self.rows
        );
        assert_eq!(
            x.len() % self.cols,
            0,
            "{}: input is not [t, {}]",
            self.name,
            self.cols
        );
        assert_eq!(
            out.len(),
            x.len() / self.cols * rows.len(),
            "{}: output length",
            self.name
        );
        let n = rows.len();
        products::with_acts_cache(|cache| {
            cache.clear();
            if let Some(f) = self.act_format() {
                cache.prepare(f, x, self.cols);
            }
            self.product_block(cache.acts(self, x), rows, out, n);
        });
    }

    /// The format a product quantizes its input rows to before the integer dot products:
    /// `None` when the weight multiplies f32 rows (float and FP8 weights, exact activations,
    /// types whose activations are f32).
    pub(crate) fn act_format(&self) -> Option<ActFormat> {
        match &self.storage {
            Storage::Quant {
                ty,
                exact_activations: false,
                ..
            } => ty.act_format().filter(|f| *f != ActFormat::F32),
            _ => None,
        }
    }

    /// `out[ti * stride + j] = W[rows.start + j] · x_ti` for a block of rows and the `t` rows
    /// of `x` (whose `quantized` rows are in [`Linear::act_format`] when that is `Some`).
    pub(crate) fn product_block(
        &self,
        x: Acts<'_>,
        rows: Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        const ROWS_AT_ONCE: usize = 16;
        let c = self.cols;
        let t = x.rows(c);
        if let Storage::Quant {
            ty,
            data,
            row_bytes,
            repacked,
            copy,
            ..
        } = &self.storage
        {
            let data: &[u8] = copy.as_deref().map_or(data, |c| c);
            if let (Some(rp), false) = (repacked, x.quantized.is_empty()) {
                repack::repacked_gemm(Isa::detect(), rp, rows, x.quantized, out, stride)
                    // OK because the copy was made at load from checked rows, and the caller
                    // quantized to Q8_K (`act_format`).
                    .expect("repacked rows and activations checked");
                return;
            }
            let w = &data[rows.start * row_bytes..rows.end * row_bytes];
            if x.quantized.is_empty() {
                // Exact (f32) activations: the fused dot of each stored row with each x row.
                for (j, wr) in w.chunks_exact(*row_bytes).enumerate() {
                    for (ti, xr) in x.f32.chunks_exact(c).enumerate() {
                        out[ti * stride + j] = quant::vec_dot_row(*ty, wr, xr)
                            // OK because `load` checked the type is supported and the row length.
                            .expect("quantized row checked at load");
                    }
                }
            } else {
                debug_assert_eq!(x.quantized.len(), t);
                // One call for the whole block: its checks run once, its kernels tile rows and
                // tokens; every value equals `vec_dot` of the row with the token's activations.
                quant::gemm(Isa::detect(), *ty, w, x.quantized, out, stride)
                    // OK because `load` checked the type and the row length, and the caller
                    // quantized to the type's format.
                    .expect("quantized rows and activations checked");
            }
            return;
        }
        // F32 rows as stored, when aligned: no copy (routers are F32 in GGUF files).
        if let Storage::F32 { data, copy } = &self.storage {
            let d: &[u8] = copy.as_deref().map_or(data, |c| c);
            if let Some(w) = convert::f32_view(&d[rows.start * c * 4..rows.end * c * 4]) {
                for (j, wr) in w.chunks_exact(c).enumerate() {
                    for (ti, xr) in x.f32.chunks_exact(c).enumerate() {
                        out[ti * stride + j] = matmul::dot(wr, xr);
                    }
                }
                return;
            }
        }
        // Other float weights: a few rows at a time decoded to f32 in this thread's buffer.
        let mut run = |buf: &mut Vec<f32>| {
            buf.resize(ROWS_AT_ONCE.min(rows.len()) * c, 0.0);
            let mut r0 = rows.start;
            while r0 < rows.end {
                let r1 = (r0 + ROWS_AT_ONCE).min(rows.end);
                let w = &mut buf[..(r1 - r0) * c];
                self.decode_rows(r0..r1, w);
                for (i, wr) in w.chunks_exact(c).enumerate() {
                    let col = r0 - rows.start + i;
                    for (ti, xr) in x.f32.chunks_exact(c).enumerate() {
                        out[ti * stride + col] = matmul::dot(wr, xr);
                    }
                }
                r0 = r1;
            }
        };
        DECODED.with(|b| match b.try_borrow_mut() {
            Ok(mut b) => run(&mut b),
            Err(_) => run(&mut Vec::new()),
        });
    }
}

thread_local! {
    /// [`Linear::product_block`]'s decoded float rows, kept per thread (no allocation per
    /// product once warmed up).
    static DECODED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Views of a matrix over bytes of another type (the expert cache's low-bit fallback copies).
impl<'a> Linear<'a> {
    /// The element type of the stored weight.
    pub fn stored_dtype(&self) -> DType {
        match &self.storage {
            Storage::F32 { .. } => DType::F32,
            Storage::Bf16(_) => DType::BF16,
            Storage::F16(_) => DType::F16,
            // OK: every QuantType is a ggml type DType knows.
            Storage::Quant { ty, .. } => {
                DType::from_ggml_id(ty.ggml_id()).expect("a ggml block type")
            }
            Storage::Fp8 { .. } => DType::F8E4M3,
        }
    }

    /// The same matrix (name, rows, cols) over `data` stored as `dtype`: a lower-bit copy of
    /// the weight, as the expert cache hands back from its fallback tier. `None` if `data` is
    /// not exactly `rows` rows of `cols` values of `dtype`, or `dtype` is FP8 (needs block
    /// scales) or a type without kernels. Quantized copies keep this matrix's activation mode.
    pub fn quantized_view<'b>(&self, dtype: DType, data: &'b [u8]) -> Option<Linear<'b>>
    where
        'a: 'b,
    {
        let n = self.rows.checked_mul(self.cols)?;
        let plain = |width: usize| (data.len() == n.checked_mul(width)?).then_some(data);
        let storage = match dtype {
            DType::F32 => Storage::F32 {
                data: plain(4)?,
                copy: None,
            },
            DType::BF16 => Storage::Bf16(plain(2)?),
            DType::F16 => Storage::F16(plain(2)?),
            other => {
                let ty = QuantType::from_ggml_id(other.ggml_id()?).filter(|q| q.is_supported())?;
                let row_bytes = ty.row_bytes(self.cols).ok()?;
                if data.len() != row_bytes.checked_mul(self.rows)? {
                    return None;
                }
                let exact_activations = matches!(
                    self.storage,
                    Storage::Quant {
                        exact_activations: true,
                        ..
                    }
                );
                Storage::Quant {
                    ty,
                    data,
                    row_bytes,
                    exact_activations,
                    // Bytes read at run time are in the file's layout (no repacked copy).
                    repacked: None,
                    copy: None,
                }
            }
        };
        Some(Linear {
            name: self.name.clone(),
            rows: self.rows,
            cols: self.cols,
            storage,
        })
    }
}

mod pair;
#[cfg(test)]
pub(crate) mod tests;
