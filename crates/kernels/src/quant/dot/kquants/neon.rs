//! AArch64 placeholder (filled below).
