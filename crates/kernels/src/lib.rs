//! # frugal-kernels
//!
//! Pure compute on slices, with no knowledge of files or models. Each kernel has a scalar
//! reference; SIMD variants (AVX-512, AVX2, NEON) are chosen at run time and tested against it.
//!
//! - [`cpu`]: which instruction set (scalar, AVX2, AVX-512/VNNI, NEON) the kernels use.
//! - [`convert`]: f16, bf16 and FP8 e4m3 (block-scaled) to f32.
//! - [`quant`]: llama.cpp's quantized block formats (Q4_0…Q8_0, Q2_K…Q6_K, IQ4_NL, IQ4_XS,
//!   MXFP4):
//!   dequantization and fused dot products.
//! - [`matmul`]: dot, axpy, matrix-vector and matrix-matrix products over f32.
//! - [`norm`]: RMSNorm (root-mean-square normalisation).
//! - [`softmax`]: softmax and sigmoid.
//! - [`activation`]: SiLU and SwiGLU.
//! - [`hugemem`]: huge-page backed buffers for the weight copies made at load.
//! - [`pool`]: a persistent low-latency thread pool (`parallel_for` over borrowed data).
//! - [`rope`]: rotary position embedding on interleaved or half-split pairs.
#![deny(missing_docs)]

pub mod activation;
pub mod convert;
pub mod cpu;
pub mod exp;
pub mod hugemem;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod rope;
pub mod softmax;
