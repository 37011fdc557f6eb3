//! # frugal-engine
//!
//! Everything between a loaded model and a user: tokenizers, streaming detokenization, chat
//! templates, generation settings, sampling and the model-independent generation loop. Later:
//! sessions, KV cache, the batching scheduler and an expert residency cache. [`residency`] measures
//! what such a cache would achieve on recorded routing (usage statistics, policy simulation). The reasoning parser
//! ([`reasoning`]) splits `<think>` blocks from answers.
#![deny(missing_docs)]

pub mod assets;
pub mod chat_template;
pub mod generation;
pub mod reasoning;
pub mod residency;
pub mod sampling;
pub mod tokenizer;
