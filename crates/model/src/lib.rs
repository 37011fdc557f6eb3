//! # frugal-model
//!
//! Architectures assembled from blocks: GQA or MLA attention, dense or MoE feed-forward with
//! pluggable routers.
//!
//! - [`params`]: each architecture's tensor plan, from which parameter counts and KV cache sizes
//!   follow.
//! - [`blocks`]: linear layers over mapped weights, rope tables, MLA, MLP/MoE.
//! - [`deepseek`]: the DeepSeek V2/V3 forward pass in f32.
#![deny(missing_docs)]

pub mod blocks;
pub mod deepseek;
mod error;
pub mod params;

pub use deepseek::{DeepSeek, KvCache, Trace};
pub use error::ModelError;
