//! The plain element types as one-weight "blocks": F32, F16 and BF16, so that every weight
//! type goes through the same row functions. All three convert to f32 exactly.

use super::{QuantBlock, QuantType};

/// F32: one little-endian IEEE-754 binary32. 4 bytes per weight, 32 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockF32 {
    /// The value's little-endian bytes.
    pub bits: [u8; 4],
}
const _: () = assert!(size_of::<BlockF32>() == 4);

/// F16: one little-endian IEEE-754 binary16. 2 bytes per weight, 16 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockF16 {
    /// The value's little-endian bytes.
    pub bits: [u8; 2],
}
const _: () = assert!(size_of::<BlockF16>() == 2);

/// BF16: the top 16 bits of an f32, little-endian. 2 bytes per weight, 16 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockBF16 {
    /// The value's little-endian bytes.
    pub bits: [u8; 2],
}
const _: () = assert!(size_of::<BlockBF16>() == 2);

macro_rules! scalar_block {
    ($block:ty, $ty:expr, |$b:ident| $to_f32:expr) => {
        // SAFETY: repr(C) struct of one byte array: alignment 1, no padding, any bits valid.
        unsafe impl QuantBlock for $block {
            const TYPE: QuantType = $ty;
            const BLOCK_SIZE: usize = 1;

            #[inline]
            fn dequantize(&self, out: &mut [f32]) {
                let $b = self.bits;
                out[0] = $to_f32;
            }

            #[inline]
            fn vec_dot(&self, x: &[f32]) -> f32 {
                let $b = self.bits;
                $to_f32 * x[0]
            }
        }
    };
}

scalar_block!(BlockF32, QuantType::F32, |b| f32::from_le_bytes(b));
scalar_block!(BlockF16, QuantType::F16, |b| half::f16::from_le_bytes(b)
    .to_f32());
scalar_block!(BlockBF16, QuantType::BF16, |b| half::bf16::from_le_bytes(b)
    .to_f32());
