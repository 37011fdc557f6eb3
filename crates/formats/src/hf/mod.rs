//! Hugging Face model folders and the hub cache.
//!
//! ## A model folder
//!
//! What `transformers`' `save_pretrained` writes: `config.json` (always), the weights
//! (`model.safetensors` or shards plus `model.safetensors.index.json`), and the tokenizer files:
//! `tokenizer.json` (the `tokenizers` library's format), `tokenizer_config.json` (special tokens,
//! flags and, before transformers 4.47 or so, the chat template), `special_tokens_map.json`,
//! `generation_config.json` (sampling defaults, end-of-sequence ids) and, in newer versions,
//! `chat_template.jinja`, which then holds the template instead of `tokenizer_config.json`.
//! [`HfFolder`] reads the small JSON files at once and maps the weights only on request, so a
//! folder with `config.json` alone can be inspected.
//!
//! ## The hub cache
//!
//! `huggingface_hub` downloads into `CACHE/models--ORG--NAME/`, with `blobs/` (content-addressed
//! files), `snapshots/REV/` (the repository's tree at commit `REV`, files being relative
//! symlinks into `blobs/`) and `refs/main` (a text file holding the commit `main` points to).
//! `CACHE` is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
//! [`resolve_model_path`] turns a path or an `ORG/NAME[@REV]` id into a folder (or `.gguf` file).
//! Reference: huggingface_hub's "Understand caching" guide.

mod cache;
mod folder;
mod generation_config;
mod tokenizer_config;

use std::path::PathBuf;

pub use cache::{
    cache_roots_from_env, default_cache_roots, resolve_model_path, resolve_model_path_in,
};
pub use folder::HfFolder;
pub use generation_config::GenerationConfig;
pub use tokenizer_config::TokenizerConfig;

use crate::safetensors::SafetensorsError;

/// Errors from model folders and the hub cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (with line and column).
        source: serde_json::Error,
    },
    /// A key of a JSON file has the wrong type or an impossible value.
    #[error("{path}: `{key}`: {message}")]
    InvalidField {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A folder is not a model folder (no `config.json`).
    #[error("{path}: not a model folder (no config.json)")]
    NotAModelFolder {
        /// The folder.
        path: PathBuf,
    },
    /// A path exists but is neither a model folder, a hub cache repository nor a model file.
    #[error(
        "{path}: not a model: no config.json, and not a models--ORG--NAME cache folder or a .gguf/.safetensors file"
    )]
    NotAModel {
        /// The path.
        path: PathBuf,
    },
    /// A hub cache repository folder has no snapshot.
    #[error("{path}: hub cache folder has no snapshot in snapshots/")]
    NoSnapshot {
        /// The `models--ORG--NAME` folder.
        path: PathBuf,
    },
    /// A revision is neither a ref nor a snapshot of a cached repository.
    #[error("{path}: no ref or snapshot named `{revision}`")]
    RevisionNotFound {
        /// The `models--ORG--NAME` folder.
        path: PathBuf,
        /// The revision asked for.
        revision: String,
    },
    /// A model spec matched nothing.
    #[error(
        "model `{spec}` not found: no such path and not in the Hugging Face cache (searched {})",
        list(searched)
    )]
    NotFound {
        /// What was asked for.
        spec: String,
        /// Every path that was tried, in order.
        searched: Vec<PathBuf>,
    },
    /// Reading the weights failed.
    #[error(transparent)]
    Weights(Box<SafetensorsError>),
}

impl From<SafetensorsError> for HfError {
    fn from(e: SafetensorsError) -> Self {
        HfError::Weights(Box::new(e))
    }
}

fn list(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// Reads and parses a JSON file.
fn read_json(path: &std::path::Path) -> Result<serde_json::Value, HfError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| HfError::Json {
        path: path.into(),
        source,
    })
}
