//! # frugal-kernels
//!
//! Pure compute on slices, with no knowledge of files or models. Each kernel has a scalar
//! reference; SIMD variants (AVX-512, AVX2, NEON) are chosen at run time and tested against it.
//!
//! - [`convert`]: f16, bf16 and FP8 e4m3 (block-scaled) to f32.
#![deny(missing_docs)]

pub mod convert;
