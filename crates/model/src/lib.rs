//! # frugal-model
//!
//! Architectures assembled from blocks: GQA or MLA attention, dense or MoE feed-forward with
//! pluggable routers. For now: each architecture's tensor plan, from which parameter counts and
//! KV cache sizes follow.
#![deny(missing_docs)]

pub mod params;
