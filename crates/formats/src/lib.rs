//! # frugal-formats
//!
//! Model files become a typed model description plus tensor views, with no compute:
//!
//! - [`gguf`]: GGUF v2/v3 files and their splits (`NAME-00001-of-0000N.gguf`);
//! - [`safetensors`]: single and sharded safetensors files;
//! - [`hf`]: Hugging Face model folders and the hub cache layout;
//! - [`config`]: `config.json` and GGUF metadata, parsed into one typed [`config::ModelConfig`];
//! - [`model_files`]: one entry point, [`ModelFiles::open`], for any of the above;
//! - [`dtype`] and [`tensor`]: the types and borrowed views both file formats share.
//!
//! Weights are memory-mapped and handed out as borrowed byte slices; nothing is copied at load.
//! Every reader treats file bytes as untrusted: sizes and offsets are checked before use, and a
//! malformed file gives an error naming what is wrong, never a panic.
#![deny(missing_docs)]

pub mod config;
pub mod dtype;
pub mod gguf;
pub mod hf;
pub mod model_files;
pub mod safetensors;
pub mod tensor;

pub use dtype::DType;
pub use model_files::{ModelFiles, OpenError};
pub use tensor::{TensorInfo, TensorSource, TensorView};
