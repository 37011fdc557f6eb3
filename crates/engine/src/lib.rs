//! # frugal-engine
//!
//! Everything between a loaded model and a user: tokenizers, streaming detokenization, chat
//! templates, generation settings, sampling, the model-independent generation loop, and the
//! continuous-batching [`scheduler`] that serves many requests at once. Later: expert residency. The reasoning parser
//! ([`reasoning`]) splits `<think>` blocks from answers.
#![deny(missing_docs)]

pub mod assets;
pub mod chat_template;
pub mod generation;
pub mod reasoning;
pub mod sampling;
pub mod scheduler;
pub mod tokenizer;
