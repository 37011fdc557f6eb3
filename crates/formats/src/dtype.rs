//! Element and block types of tensors in model files.
//!
//! One enum covers both worlds: the llama.cpp (`ggml_type`) block types that GGUF stores, and
//! the plain element types that safetensors stores (including DeepSeek's FP8). A quantized type
//! packs `block_size` weights into `type_size` bytes; a plain type has a block size of 1.
//!
//! The ids and sizes follow `ggml.h` / `ggml-common.h` and gguf-py's `GGML_QUANT_SIZES`;
//! `tests/gguf.rs` checks them against `fixtures/formats/ggml_types.json`, dumped from gguf-py.

use std::fmt;

/// The element or block type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // The variant names are the llama.cpp / safetensors names.
pub enum DType {
    F32,
    F16,
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
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    // Types only safetensors files carry.
    F8E4M3,
    F8E5M2,
    F8E8M0,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

/// Static facts about one type: (dtype, ggml id if any, name, block size, bytes per block).
const TABLE: &[(DType, Option<u32>, &str, usize, usize)] = &[
    (DType::F32, Some(0), "F32", 1, 4),
    (DType::F16, Some(1), "F16", 1, 2),
    (DType::Q4_0, Some(2), "Q4_0", 32, 18),
    (DType::Q4_1, Some(3), "Q4_1", 32, 20),
    (DType::Q5_0, Some(6), "Q5_0", 32, 22),
    (DType::Q5_1, Some(7), "Q5_1", 32, 24),
    (DType::Q8_0, Some(8), "Q8_0", 32, 34),
    // ggml's block_q8_1 is two f16 (d, s) and 32 int8 = 36 bytes (static_assert in
    // ggml-common.h); gguf-py's table still says 4 + 4 + 32 from when d and s were f32.
    (DType::Q8_1, Some(9), "Q8_1", 32, 36),
    (DType::Q2K, Some(10), "Q2_K", 256, 84),
    (DType::Q3K, Some(11), "Q3_K", 256, 110),
    (DType::Q4K, Some(12), "Q4_K", 256, 144),
    (DType::Q5K, Some(13), "Q5_K", 256, 176),
    (DType::Q6K, Some(14), "Q6_K", 256, 210),
    (DType::Q8K, Some(15), "Q8_K", 256, 292),
    (DType::IQ2XXS, Some(16), "IQ2_XXS", 256, 66),
    (DType::IQ2XS, Some(17), "IQ2_XS", 256, 74),
    (DType::IQ3XXS, Some(18), "IQ3_XXS", 256, 98),
    (DType::IQ1S, Some(19), "IQ1_S", 256, 50),
    (DType::IQ4NL, Some(20), "IQ4_NL", 32, 18),
    (DType::IQ3S, Some(21), "IQ3_S", 256, 110),
    (DType::IQ2S, Some(22), "IQ2_S", 256, 82),
    (DType::IQ4XS, Some(23), "IQ4_XS", 256, 136),
    (DType::I8, Some(24), "I8", 1, 1),
    (DType::I16, Some(25), "I16", 1, 2),
    (DType::I32, Some(26), "I32", 1, 4),
    (DType::I64, Some(27), "I64", 1, 8),
    (DType::F64, Some(28), "F64", 1, 8),
    (DType::IQ1M, Some(29), "IQ1_M", 256, 56),
    (DType::BF16, Some(30), "BF16", 1, 2),
    (DType::TQ1_0, Some(34), "TQ1_0", 256, 54),
    (DType::TQ2_0, Some(35), "TQ2_0", 256, 66),
    (DType::MXFP4, Some(39), "MXFP4", 32, 17),
    // NVFP4: 64 weights as four 16-weight groups, each with an FP8 (E4M3) scale, plus 32 bytes
    // of 4-bit codes. Q1_0: 128 one-bit weights with one f16 scale. Sizes as in gguf-py.
    (DType::NVFP4, Some(40), "NVFP4", 64, 36),
    (DType::Q1_0, Some(41), "Q1_0", 128, 18),
    (DType::F8E4M3, None, "F8_E4M3", 1, 1),
    (DType::F8E5M2, None, "F8_E5M2", 1, 1),
    (DType::F8E8M0, None, "F8_E8M0", 1, 1),
    (DType::U8, None, "U8", 1, 1),
    (DType::U16, None, "U16", 1, 2),
    (DType::U32, None, "U32", 1, 4),
    (DType::U64, None, "U64", 1, 8),
    (DType::Bool, None, "BOOL", 1, 1),
];

impl DType {
    fn row(self) -> &'static (DType, Option<u32>, &'static str, usize, usize) {
        // OK because every variant has exactly one row; `tests` below checks it.
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every DType has a table row")
    }

    /// The `ggml_type` id stored in GGUF files, if llama.cpp has this type.
    pub fn ggml_id(self) -> Option<u32> {
        self.row().1
    }

    /// The type for a `ggml_type` id read from a file. Ids of types llama.cpp removed
    /// (4, 5, 31..=33, 36..=38) and unknown ids give `None`.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        TABLE.iter().find(|r| r.1 == Some(id)).map(|r| r.0)
    }

    /// The type for a safetensors dtype string such as `"BF16"` or `"F8_E4M3"`.
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        match name {
            "F64" => Some(DType::F64),
            "F32" => Some(DType::F32),
            "F16" => Some(DType::F16),
            "BF16" => Some(DType::BF16),
            "F8_E4M3" => Some(DType::F8E4M3),
            "F8_E5M2" => Some(DType::F8E5M2),
            "F8_E8M0" => Some(DType::F8E8M0),
            "I64" => Some(DType::I64),
            "I32" => Some(DType::I32),
            "I16" => Some(DType::I16),
            "I8" => Some(DType::I8),
            "U64" => Some(DType::U64),
            "U32" => Some(DType::U32),
            "U16" => Some(DType::U16),
            "U8" => Some(DType::U8),
            "BOOL" => Some(DType::Bool),
            _ => None,
        }
    }

    /// The canonical name, as llama.cpp prints it (`Q4_K`, `IQ4_XS`) or as safetensors spells it.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Weights per block: 1 for plain types, 32 or 256 for quantized ones.
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether this is a block-quantized type (block size above 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by a row of `n` elements, or `None` when `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85.
        if n % self.block_size() != 0 {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Average bits per weight (4.5 for Q4_K, 8.5 for Q8_0).
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }

    /// Every type, in table order.
    pub fn all() -> impl Iterator<Item = DType> {
        TABLE.iter().map(|r| r.0)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_one_row() {
        for (i, r) in TABLE.iter().enumerate() {
            assert_eq!(TABLE.iter().filter(|s| s.0 == r.0).count(), 1, "row {i}");
            if let Some(id) = r.1 {
                assert_eq!(DType::from_ggml_id(id), Some(r.0));
            }
        }
    }

    #[test]
    fn removed_ids_are_unknown() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 1000] {
            assert_eq!(DType::from_ggml_id(id), None, "id {id}");
        }
    }
}
