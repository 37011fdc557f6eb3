//! # frugal-kernels
//!
//! Pure compute on slices. Each kernel has a scalar reference; SIMD variants are chosen at run
//! time and tested against it.
#![deny(missing_docs)]
