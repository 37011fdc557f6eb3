//! # frugal-testdata
//!
//! Where every crate's tests find their data, so no test hard-codes a path:
//!
//! - [`fixtures_dir`]: the committed fixtures (`fixtures/` in the repository), made by the
//!   scripts beside them from the reference implementations;
//! - [`reference_dir`]: the shared reference set (real hub configs, chat templates, llama.cpp's
//!   tokenizer test vocabularies), `$FRUGAL_REFERENCE_DIR` or else `shared/reference` beside the
//!   checkout, as CI lays it out.
//!
//! A missing reference set fails the test with a message saying how to point at it; tests never
//! skip silently.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed fixtures: `<repo>/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures")
}

/// The shared reference set: `$FRUGAL_REFERENCE_DIR`, else `<repo>/../shared/reference`.
///
/// Panics (failing the calling test) with instructions when the folder is not there.
pub fn reference_dir() -> PathBuf {
    let dir = match std::env::var_os("FRUGAL_REFERENCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/reference"),
    };
    assert!(
        dir.join("configs").is_dir() && dir.join("vocab").is_dir(),
        "reference data not found at {} (it sits beside the checkout as shared/reference; \
         set FRUGAL_REFERENCE_DIR to point elsewhere)",
        dir.display()
    );
    dir
}

/// A tiny seeded generator (splitmix64) for tests and benchmarks: reproducible random data with
/// no dependency, the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)] // Infinite and never `None`: not an iterator.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// The bits of a finite, normal f16 of either sign with biased exponent `1..=max_exp`
    /// (magnitudes `2^-14 .. 2^(max_exp-14)`): block scales that never make NaN or infinity.
    pub fn f16_bits(&mut self, max_exp: u16) -> u16 {
        let exp = 1 + (self.next() % u64::from(max_exp.clamp(1, 30))) as u16;
        ((self.next() as u16 & 1) << 15) | (exp << 10) | (self.next() as u16 & 0x3ff)
    }
}

/// Little-endian f32 bytes (a safetensors or GGUF F32 tensor's data) as values.
pub fn f32s_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The largest `|a[i] − b[i]|` (the slices must be equally long): how far our values are from a
/// reference's.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
