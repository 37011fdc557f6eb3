//! Inputs the `gguf` fuzz target (`fuzz/`) found to crash some version of the parser; each is
//! kept in `fixtures/formats/gguf/fuzz/` and must now parse to an error without panicking.
//!
//! Fuzz runs (cargo-fuzz 0.13.2, libFuzzer with the address sanitizer and overflow checks,
//! seeded with the GGUF fixtures, `-malloc_limit_mb=256`, 1 job, 2026-11-29):
//!
//! | parser                      | max_len | duration | execs  | crashes                  |
//! |-----------------------------|---------|----------|--------|--------------------------|
//! | 127acd0                     | 4096    | 721 s    | 7.83 M | 0                        |
//! | 127acd0                     | 4096    | 301 s    | 4.73 M | 0                        |
//! | 127acd0 minus zero-dim fix  | 4096    | 1 s      | 13.9 k | 1: `zero-dim-overflow-*` |
//! | 127acd0                     | 65536   | 601 s    | 8.64 M | 0                        |
//!
//! `zero-dim-overflow-13045ed1.bin`: a tensor with `ne = [0, 2^62, 105 * 2^32, 0]` has no
//! elements, so an element-count check over all dimensions passed, but multiplying the other
//! dimensions (as the target does for the size check, and as any consumer might) overflowed.
//! Found by review first (the parser now bounds the product of the non-zero dimensions); the
//! run with that fix reverted confirms the fuzz target finds it.

use frugal_formats::gguf::parse_header;

use super::support::fixture;

#[test]
fn fuzz_crash_inputs_are_errors() {
    let dir = fixture("fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let bytes = std::fs::read(&path).expect("crash input");
        let r = parse_header(&bytes);
        assert!(r.is_err(), "{}: parsed", path.display());
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}
