//! # frugal-engine
//!
//! Everything between a loaded model and a user: tokenizers, streaming detokenization, chat
//! templates and generation settings. Later: sessions, KV cache, sampling, the batching scheduler,
//! the reasoning parser and expert residency.
#![deny(missing_docs)]

pub mod assets;
pub mod chat_template;
pub mod tokenizer;
