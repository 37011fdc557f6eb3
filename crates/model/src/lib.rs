//! # frugal-model
//!
//! Architectures assembled from blocks: GQA or MLA attention, dense or MoE feed-forward with
//! pluggable routers.
//!
//! - [`active`]: weight bytes one decode step reads (for bandwidth figures).
//! - [`params`]: each architecture's tensor plan, from which parameter counts and KV cache sizes
//!   follow.
//! - [`blocks`]: linear layers over mapped weights, rope tables, MLA, GQA, MLP/MoE.
//! - [`transformer`]: the one decoder forward pass in f32, with [`Model`] and [`KvCache`].
//! - `batch`: [`Model::forward_batch`], several sequences (prefill chunks and decode tokens)
//!   in one pass, as [`BatchItem`]s.
//! - `families`: per family (DeepSeek V2/V3, Qwen2, Llama, Qwen3-MoE, Mixtral) which blocks
//!   each layer uses and the checkpoint's tensor names.
//! - `gguf_names`: GGUF (llama.cpp) tensor names seen as Hugging Face names.
//! - [`profile`]: opt-in wall time per phase of the forward pass (`frugal bench --profile`).
//! - [`quant_plan`]: the type of each tensor in a quantized model (llama.cpp's presets).
//! - [`quantize_gguf`]: GGUF → quantized GGUF with those types, as `llama-quantize` writes it.
//! - [`quantized_weights`]: quantize on load (a safetensors model run with quantized matrices).
#![deny(missing_docs)]

pub mod active;
mod batch;
pub mod blocks;
mod error;
mod families;
mod gguf_names;
pub mod params;
pub mod profile;
pub mod quant_plan;
pub mod quantize_gguf;
pub mod quantized_weights;
pub mod transformer;

pub use batch::BatchItem;
pub use error::ModelError;
pub use transformer::{DeepSeek, KvCache, LoadOptions, Model, Trace};
