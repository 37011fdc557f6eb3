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
