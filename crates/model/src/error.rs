//! Errors of loading and running a model.

use frugal_formats::DType;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The config could not be read.
    #[error(transparent)]
    Open(#[from] Box<frugal_formats::OpenError>),
    /// The model has a config but no weight files.
    #[error("the model has no weights (config only)")]
    NoWeights,
    /// This loader does not run the architecture.
    #[error("architecture {architecture} is not supported by the {loader} loader")]
    UnsupportedArchitecture {
        /// The config's architecture.
        architecture: String,
        /// Which loader refused.
        loader: &'static str,
    },
    /// A tensor the architecture needs is absent.
    #[error("missing tensor {name}")]
    MissingTensor {
        /// The tensor's checkpoint name.
        name: String,
    },
    /// A tensor has an unexpected shape.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        /// The tensor's checkpoint name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's element type cannot be used here.
    #[error("tensor {name} has unsupported dtype {dtype:?}")]
    UnsupportedDtype {
        /// The tensor's checkpoint name.
        name: String,
        /// Its element type.
        dtype: DType,
    },
    /// A tensor's byte size does not match its shape and dtype.
    #[error("tensor {name} holds {found} bytes, its shape and dtype need {expected}")]
    WrongByteSize {
        /// The tensor's checkpoint name.
        name: String,
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A config setting this loader does not implement.
    #[error("unsupported configuration: {what}")]
    UnsupportedConfig {
        /// What is not supported.
        what: String,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} at position {index} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Its index in the input.
        index: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// The sequence would pass the model's context length.
    #[error("{needed} positions exceed the model's max_position_embeddings ({max})")]
    ContextTooLong {
        /// Positions needed (cached + new).
        needed: usize,
        /// The model's limit.
        max: usize,
    },
    /// The cache was built for another model shape.
    #[error(
        "KV cache shape {found:?} does not fit the model's {expected:?} (layers, then per \
         position latent and rope key dims for MLA, kv heads and head dim for GQA)"
    )]
    CacheMismatch {
        /// The model's `[layers, kv_lora_rank, qk_rope_head_dim]` (MLA) or
        /// `[layers, num_kv_heads, head_dim]` (GQA).
        expected: [usize; 3],
        /// The cache's.
        found: [usize; 3],
    },
    /// `start_pos` is not where the cache ends.
    #[error("start position {start_pos} does not follow the {cached} cached positions")]
    CachePosition {
        /// The position asked for.
        start_pos: usize,
        /// Positions already in the cache.
        cached: usize,
    },
    /// A batch item has no tokens to run.
    #[error("a batch item has no tokens")]
    EmptyBatchItem,
}
