//! llama.cpp (ggml) quantized block formats: block layouts, dequantization and fused dot
//! products, as scalar references.
//!
//! A quantized row of `n` weights is `n / BLOCK_SIZE` blocks of `TYPE_SIZE` bytes each, stored
//! back to back, every multi-byte field little-endian. Each block type is a `#[repr(C)]` struct
//! made only of byte arrays (alignment 1, no padding, every bit pattern valid), so a byte slice
//! from a memory-mapped file, whatever its address, is viewed as `&[Block]` by [`as_blocks`]
//! after a length check: no copy, no alignment requirement.
//!
//! Every block type implements [`QuantBlock`]: `dequantize` (block → f32) and `vec_dot` (the dot
//! product of the dequantized block with f32 activations, fused: the f32 block is never
//! written). Row functions check lengths and dispatch on a [`QuantType`] ([`dequantize_row`],
//! [`vec_dot_row`]) or on a block type ([`dequantize_row_as`], [`vec_dot_row_as`]).
//!
//! Supported: F32, F16, BF16; Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 ([`legacy`]); Q2_K…Q6_K ([`kquants`]);
//! IQ4_NL, IQ4_XS ([`iquants`]); MXFP4 ([`fp4`]). Other ggml types (IQ1_S…IQ3_S, NVFP4, TQ1_0, ...) are
//! [`QuantError::Unsupported`]; adding one is a new block struct plus a `QuantBlock` impl and a
//! dispatch line.
//!
//! Reference: the block structs of llama.cpp's `ggml-common.h` and the `dequantize_row_*`
//! functions of `ggml-quants.c` (llama.cpp commit 0c1e570), and gguf-py's `gguf/quants.py`.
//! Dequantization evaluates each weight with the same f32 operations in the same order as
//! both (e.g. Q4_K: `(d·sc)·q − dmin·m`), so it reproduces them bit for bit; the tests check
//! that against gguf-py (`fixtures/quant/`, `fixtures/gguf/`).

pub mod act;
pub mod dot;
pub mod float;
pub mod fp4;
pub mod iquants;
pub mod kquants;
pub mod legacy;
pub mod quantize;
pub mod repack;

pub use act::{ActFormat, BlockQ8K, BlockQ8_1, QuantizedActs};
pub use dot::gemm;
pub use float::{BlockBF16, BlockF16, BlockF32};
pub use fp4::BlockMXFP4;
pub use iquants::{BlockIQ4NL, BlockIQ4XS};
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};

/// Weights per k-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A ggml tensor type: the element or block type of a quantized row.
///
/// Variant names follow `frugal_formats::DType` (and so llama.cpp's names, `Q4_K` → `Q4K`);
/// [`QuantType::name`] gives llama.cpp's spelling and [`QuantType::from_ggml_id`] maps GGUF's
/// type ids. Types without a kernel yet are listed so that an error can name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types, missing_docs)] // The variant names are llama.cpp's names.
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    IQ2XXS,
    IQ2XS,
    IQ3XXS,
    IQ1S,
    IQ4NL,
    IQ3S,
    IQ2S,
    IQ4XS,
    IQ1M,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// (type, ggml id, llama.cpp name, weights per block, bytes per block), from `ggml-common.h`.
const TYPES: &[(QuantType, u32, &str, usize, usize)] = &[
    (QuantType::F32, 0, "F32", 1, 4),
    (QuantType::F16, 1, "F16", 1, 2),
    (QuantType::Q4_0, 2, "Q4_0", 32, 18),
    (QuantType::Q4_1, 3, "Q4_1", 32, 20),
    (QuantType::Q5_0, 6, "Q5_0", 32, 22),
    (QuantType::Q5_1, 7, "Q5_1", 32, 24),
    (QuantType::Q8_0, 8, "Q8_0", 32, 34),
    (QuantType::Q8_1, 9, "Q8_1", 32, 36),
    (QuantType::Q2K, 10, "Q2_K", 256, 84),
    (QuantType::Q3K, 11, "Q3_K", 256, 110),
    (QuantType::Q4K, 12, "Q4_K", 256, 144),
    (QuantType::Q5K, 13, "Q5_K", 256, 176),
    (QuantType::Q6K, 14, "Q6_K", 256, 210),
    (QuantType::Q8K, 15, "Q8_K", 256, 292),
    (QuantType::IQ2XXS, 16, "IQ2_XXS", 256, 66),
    (QuantType::IQ2XS, 17, "IQ2_XS", 256, 74),
    (QuantType::IQ3XXS, 18, "IQ3_XXS", 256, 98),
    (QuantType::IQ1S, 19, "IQ1_S", 256, 50),
    (QuantType::IQ4NL, 20, "IQ4_NL", 32, 18),
    (QuantType::IQ3S, 21, "IQ3_S", 256, 110),
    (QuantType::IQ2S, 22, "IQ2_S", 256, 82),
    (QuantType::IQ4XS, 23, "IQ4_XS", 256, 136),
    (QuantType::IQ1M, 29, "IQ1_M", 256, 56),
    (QuantType::BF16, 30, "BF16", 1, 2),
    (QuantType::TQ1_0, 34, "TQ1_0", 256, 54),
    (QuantType::TQ2_0, 35, "TQ2_0", 256, 66),
    (QuantType::MXFP4, 39, "MXFP4", 32, 17),
    (QuantType::NVFP4, 40, "NVFP4", 64, 36),
    (QuantType::Q1_0, 41, "Q1_0", 128, 18),
];

impl QuantType {
    /// Every type, in ggml id order.
    pub fn all() -> impl Iterator<Item = QuantType> {
        TYPES.iter().map(|r| r.0)
    }

    fn row(self) -> &'static (QuantType, u32, &'static str, usize, usize) {
        // OK because every variant has a row in TYPES (checked by a unit test).
        TYPES
            .iter()
            .find(|r| r.0 == self)
            .expect("every QuantType has a TYPES row")
    }

    /// llama.cpp's name: `Q4_K`, `IQ4_XS`, `BF16`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// GGUF's `ggml_type` id.
    pub fn ggml_id(self) -> u32 {
        self.row().1
    }

    /// Weights per block (1 for F32/F16/BF16).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// The type of a GGUF `ggml_type` id, if it is a weight type.
    pub fn from_ggml_id(id: u32) -> Option<QuantType> {
        TYPES.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The type of llama.cpp's name (`"Q4_K"`), exact spelling.
    pub fn from_name(name: &str) -> Option<QuantType> {
        TYPES.iter().find(|r| r.2 == name).map(|r| r.0)
    }

    /// Whether this module has kernels for the type.
    pub fn is_supported(self) -> bool {
        use QuantType::*;
        matches!(
            self,
            F32 | F16
                | BF16
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q8_0
                | Q2K
                | Q3K
                | Q4K
                | Q5K
                | Q6K
                | IQ4NL
                | IQ4XS
                | MXFP4
        )
    }

    /// Bytes of a row of `n` weights, or an error if `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Result<usize, QuantError> {
        let (bs, ts) = (self.block_size(), self.type_size());
        #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85.
        if n % bs != 0 {
            return Err(QuantError::NotWholeBlocks {
                ty: self.name(),
                n,
                block_size: bs,
            });
        }
        (n / bs)
            .checked_mul(ts)
            .ok_or(QuantError::TooLarge { ty: self.name(), n })
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the quantized-row functions: unsupported types and lengths that do not fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// No kernel for this type yet.
    #[error("{ty}: quantized type not supported yet")]
    Unsupported {
        /// llama.cpp's name of the type.
        ty: &'static str,
    },
    /// A row length that is not a multiple of the block size.
    #[error("{ty}: a row of {n} weights is not a whole number of {block_size}-weight blocks")]
    NotWholeBlocks {
        /// The type.
        ty: &'static str,
        /// Weights in the row.
        n: usize,
        /// Weights per block.
        block_size: usize,
    },
    /// Bytes that are not a whole number of blocks.
    #[error("{ty}: {len} bytes is not a whole number of {type_size}-byte blocks")]
    NotWholeBytes {
        /// The type.
        ty: &'static str,
        /// Bytes given.
        len: usize,
        /// Bytes per block.
        type_size: usize,
    },
    /// Source bytes of the wrong length for the number of weights asked for.
    #[error("{ty}: {n} weights take {expected} bytes, got {got}")]
    ByteLength {
        /// The type.
        ty: &'static str,
        /// Weights asked for (output or activation length).
        n: usize,
        /// Bytes they take.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Activations in another format than the weight type's dot product takes.
    #[error("{ty}: dot product takes {expected:?} activations, got {got:?}")]
    ActFormat {
        /// The weight type.
        ty: &'static str,
        /// Its activation format.
        expected: ActFormat,
        /// The format given.
        got: ActFormat,
    },
    /// Operands of a product whose shapes do not fit together.
    #[error("quantized product: {what}")]
    Shape {
        /// What does not fit.
        what: String,
    },
    /// A row so long its byte size overflows `usize`.
    #[error("{ty}: a row of {n} weights is too large")]
    TooLarge {
        /// The type.
        ty: &'static str,
        /// Weights in the row.
        n: usize,
    },
    /// The system refused memory for a copy of the weights.
    #[error("no memory for a {bytes}-byte copy of the weights: {why}")]
    Memory {
        /// Bytes asked for.
        bytes: usize,
        /// The system's reason.
        why: String,
    },
}

/// One block of a quantized format.
///
/// `BLOCK_SIZE` weights are stored in `TYPE_SIZE` bytes (`size_of::<Self>()`). `dequantize`
/// and `vec_dot` take exactly `BLOCK_SIZE` values and panic otherwise (a caller bug; the row
/// functions check lengths and return errors).
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` structs whose fields are all `u8`/`i8` arrays: alignment
/// 1, no padding, every bit pattern a valid value. [`as_blocks`] relies on it to view any byte
/// slice as blocks (it also checks size and alignment at compile time).
pub unsafe trait QuantBlock: Copy + 'static {
    /// The type these blocks are.
    const TYPE: QuantType;
    /// Weights per block.
    const BLOCK_SIZE: usize;
    /// Bytes per block.
    const TYPE_SIZE: usize = std::mem::size_of::<Self>();

    /// Writes the block's `BLOCK_SIZE` weights to `out`.
    fn dequantize(&self, out: &mut [f32]);

    /// `Σ w_i·x_i` over the block's dequantized weights `w` and `x` (`BLOCK_SIZE` values),
    /// without writing `w` out: integer codes are summed per sub-block, then scaled.
    fn vec_dot(&self, x: &[f32]) -> f32;
}

/// Views `bytes` (any address) as blocks of `B`; errors unless it is a whole number of blocks.
pub fn as_blocks<B: QuantBlock>(bytes: &[u8]) -> Result<&[B], QuantError> {
    const {
        assert!(std::mem::align_of::<B>() == 1);
        assert!(std::mem::size_of::<B>() == B::TYPE_SIZE);
    }
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85.
    if bytes.len() % B::TYPE_SIZE != 0 {
        return Err(QuantError::NotWholeBytes {
            ty: B::TYPE.name(),
            len: bytes.len(),
            type_size: B::TYPE_SIZE,
        });
    }
    let n = bytes.len() / B::TYPE_SIZE;
    // SAFETY: `B` has alignment 1 and size TYPE_SIZE (asserted above at compile time) and, by
    // the `QuantBlock` contract, no padding and no invalid bit patterns; `bytes` holds exactly
    // `n * TYPE_SIZE` initialised bytes, borrowed for the returned lifetime.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) })
}

/// The blocks of a row of `n` weights, checking `n` and the byte length.
fn row_blocks<B: QuantBlock>(src: &[u8], n: usize) -> Result<&[B], QuantError> {
    let expected = B::TYPE.row_bytes(n)?;
    if src.len() != expected {
        return Err(QuantError::ByteLength {
            ty: B::TYPE.name(),
            n,
            expected,
            got: src.len(),
        });
    }
    as_blocks(src)
}

/// Dequantizes a row of `B` blocks into `out` (`out.len()` weights).
pub fn dequantize_row_as<B: QuantBlock>(src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let blocks = row_blocks::<B>(src, out.len())?;
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(B::BLOCK_SIZE)) {
        b.dequantize(o);
    }
    Ok(())
}

/// The dot product of a row of `B` blocks (dequantized) with `x` (`x.len()` weights).
///
/// Block sums are added in f32 in block order.
pub fn vec_dot_row_as<B: QuantBlock>(src: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    let blocks = row_blocks::<B>(src, x.len())?;
    Ok(blocks
        .iter()
        .zip(x.chunks_exact(B::BLOCK_SIZE))
        .map(|(b, xs)| b.vec_dot(xs))
        .sum())
}

/// Calls `$f::<Block>($args)` for the block type of `$ty`, or returns `Unsupported`.
macro_rules! dispatch {
    ($ty:expr, $f:ident, $($arg:expr),*) => {
        match $ty {
            QuantType::F32 => $f::<BlockF32>($($arg),*),
            QuantType::F16 => $f::<BlockF16>($($arg),*),
            QuantType::BF16 => $f::<BlockBF16>($($arg),*),
            QuantType::Q4_0 => $f::<BlockQ4_0>($($arg),*),
            QuantType::Q4_1 => $f::<BlockQ4_1>($($arg),*),
            QuantType::Q5_0 => $f::<BlockQ5_0>($($arg),*),
            QuantType::Q5_1 => $f::<BlockQ5_1>($($arg),*),
            QuantType::Q8_0 => $f::<BlockQ8_0>($($arg),*),
            QuantType::Q2K => $f::<BlockQ2K>($($arg),*),
            QuantType::Q3K => $f::<BlockQ3K>($($arg),*),
            QuantType::Q4K => $f::<BlockQ4K>($($arg),*),
            QuantType::Q5K => $f::<BlockQ5K>($($arg),*),
            QuantType::Q6K => $f::<BlockQ6K>($($arg),*),
            QuantType::IQ4NL => $f::<BlockIQ4NL>($($arg),*),
            QuantType::IQ4XS => $f::<BlockIQ4XS>($($arg),*),
            QuantType::MXFP4 => $f::<BlockMXFP4>($($arg),*),
            other => Err(QuantError::Unsupported { ty: other.name() }),
        }
    };
}

/// Dequantizes a row of type `ty` (`src`: its bytes) into `out` (`out.len()` weights).
///
/// Errors: an unsupported type, a length that is not whole blocks, `src` of the wrong length.
pub fn dequantize_row(ty: QuantType, src: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    dispatch!(ty, dequantize_row_as, src, out)
}

/// The dot product of a row of type `ty` (`src`: its bytes) with `x`, fused (see
/// [`QuantBlock::vec_dot`]). Errors as [`dequantize_row`].
pub fn vec_dot_row(ty: QuantType, src: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    dispatch!(ty, vec_dot_row_as, src, x)
}

/// Reads an f16 stored as two little-endian bytes.
#[inline]
fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_one_row_and_round_trips() {
        for t in QuantType::all() {
            assert_eq!(TYPES.iter().filter(|r| r.0 == t).count(), 1, "{t}");
            assert_eq!(QuantType::from_ggml_id(t.ggml_id()), Some(t));
            assert_eq!(QuantType::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn block_structs_match_the_type_table() {
        fn check<B: QuantBlock>() {
            assert_eq!(B::BLOCK_SIZE, B::TYPE.block_size(), "{}", B::TYPE);
            assert_eq!(B::TYPE_SIZE, B::TYPE.type_size(), "{}", B::TYPE);
            assert_eq!(std::mem::align_of::<B>(), 1);
        }
        check::<BlockF32>();
        check::<BlockF16>();
        check::<BlockBF16>();
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ2K>();
        check::<BlockQ3K>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockIQ4NL>();
        check::<BlockIQ4XS>();
        check::<BlockMXFP4>();
        let supported: Vec<_> = QuantType::all().filter(|t| t.is_supported()).collect();
        assert_eq!(supported.len(), 16);
    }

    #[test]
    fn unsupported_types_are_named() {
        let mut out = [0.0f32; 256];
        let e = dequantize_row(QuantType::IQ2XXS, &[0u8; 66], &mut out).unwrap_err();
        assert_eq!(e, QuantError::Unsupported { ty: "IQ2_XXS" });
        assert_eq!(e.to_string(), "IQ2_XXS: quantized type not supported yet");
        for t in QuantType::all().filter(|t| !t.is_supported()) {
            let n = t.block_size();
            let src = vec![0u8; t.type_size()];
            let mut out = vec![0.0; n];
            assert_eq!(
                dequantize_row(t, &src, &mut out),
                Err(QuantError::Unsupported { ty: t.name() })
            );
            assert_eq!(
                vec_dot_row(t, &src, &out),
                Err(QuantError::Unsupported { ty: t.name() })
            );
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let src = [0u8; 144 * 2];
        let mut out = vec![0.0f32; 512];
        assert!(dequantize_row(QuantType::Q4K, &src, &mut out).is_ok());
        // Truncated source.
        assert_eq!(
            dequantize_row(QuantType::Q4K, &src[..287], &mut out),
            Err(QuantError::ByteLength {
                ty: "Q4_K",
                n: 512,
                expected: 288,
                got: 287
            })
        );
        // Too long a source.
        let long = [0u8; 144 * 3];
        assert!(matches!(
            vec_dot_row(QuantType::Q4K, &long, &out),
            Err(QuantError::ByteLength { .. })
        ));
        // A row that is not whole blocks.
        assert_eq!(
            vec_dot_row(QuantType::Q8_0, &[0u8; 34], &out[..33]),
            Err(QuantError::NotWholeBlocks {
                ty: "Q8_0",
                n: 33,
                block_size: 32
            })
        );
        assert_eq!(
            as_blocks::<BlockQ8_0>(&[0u8; 35]).map(|b| b.len()),
            Err(QuantError::NotWholeBytes {
                ty: "Q8_0",
                len: 35,
                type_size: 34
            })
        );
        assert_eq!(
            QuantType::F32.row_bytes(usize::MAX),
            Err(QuantError::TooLarge {
                ty: "F32",
                n: usize::MAX
            })
        );
        // Empty rows are fine.
        assert_eq!(vec_dot_row(QuantType::Q6K, &[], &[]), Ok(0.0));
    }

    #[test]
    fn blocks_view_unaligned_bytes() {
        // A Q8_0 block at an odd address: d = 1.0 (f16 0x3c00), q = 0..32.
        let mut buf = [0u8; 1 + 34];
        buf[1..3].copy_from_slice(&[0x00, 0x3c]);
        for i in 0..32 {
            buf[3 + i] = i as u8;
        }
        let mut out = [0.0f32; 32];
        dequantize_row(QuantType::Q8_0, &buf[1..], &mut out)
            .expect("OK because the row is one whole block");
        assert_eq!(out[31], 31.0);
        assert_eq!(as_blocks::<BlockQ8_0>(&buf[1..]).map(|b| b.len()), Ok(1));
    }
}
