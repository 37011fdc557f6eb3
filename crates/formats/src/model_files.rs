//! Open whatever a user names as a model: a Hugging Face folder, a hub cache entry, a GGUF file
//! or the first file of a split GGUF.
//!
//! [`ModelFiles::open`] resolves the name ([`crate::hf::resolve_model_path`]), maps every weight
//! file (nothing is read or copied yet) and gives one place to ask for the typed config, the
//! tensors, and the tokenizer and chat-template sources, whichever format they came from.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, GgufKeyValues, ModelConfig};
use crate::gguf::{GgufError, GgufModel, Metadata};
use crate::hf::{HfError, HfFolder};
use crate::safetensors::{SafetensorsError, SafetensorsModel};
use crate::tensor::TensorSource;

/// Errors from opening a model, whatever its format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Resolving the name, or reading the folder's JSON files, failed.
    #[error(transparent)]
    Hf(Box<HfError>),
    /// A GGUF file is malformed or a split is missing.
    #[error(transparent)]
    Gguf(Box<GgufError>),
    /// A safetensors file is malformed or a shard is missing.
    #[error(transparent)]
    Safetensors(Box<SafetensorsError>),
    /// The configuration (config.json or GGUF metadata) is missing a key, has a wrong value or
    /// names an architecture frugal does not support.
    #[error("{origin}: {error}")]
    Config {
        /// The file the configuration came from.
        origin: PathBuf,
        /// What is wrong (in the message, so not also exposed as `source`).
        error: ConfigError,
    },
    /// A lone `.safetensors` file has no `config.json` beside it.
    #[error("{path}: a safetensors file needs its model folder (config.json beside it); give the folder")]
    LoneSafetensors {
        /// The file.
        path: PathBuf,
    },
}

// Boxed so `Result<_, OpenError>` stays small; the readers' errors carry paths and names.
impl From<HfError> for OpenError {
    fn from(e: HfError) -> Self {
        OpenError::Hf(Box::new(e))
    }
}

impl From<GgufError> for OpenError {
    fn from(e: GgufError) -> Self {
        OpenError::Gguf(Box::new(e))
    }
}

impl From<SafetensorsError> for OpenError {
    fn from(e: SafetensorsError) -> Self {
        OpenError::Safetensors(Box::new(e))
    }
}

/// A model's files, opened and mapped.
// One value per loaded model, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelFiles {
    /// A Hugging Face folder; `weights` is `None` for a folder with only `config.json`.
    Hf {
        /// The folder's small files.
        folder: HfFolder,
        /// The mapped safetensors shards.
        weights: Option<SafetensorsModel>,
    },
    /// A GGUF file, or all splits of a split GGUF.
    Gguf(GgufModel),
}

impl ModelFiles {
    /// Open `spec`: a path (folder, hub cache `models--ORG--NAME` folder, `.gguf` file) or an
    /// `ORG/NAME[@REV]` present in the local Hugging Face cache.
    pub fn open(spec: &str) -> Result<ModelFiles, OpenError> {
        Self::open_with_progress(spec, &|_, _| {})
    }

    /// Like [`open`](Self::open), calling `progress(files_done, files_total)` as each weight
    /// file is mapped.
    pub fn open_with_progress(
        spec: &str,
        progress: &dyn Fn(usize, usize),
    ) -> Result<ModelFiles, OpenError> {
        let path = crate::hf::resolve_model_path(spec)?;
        Self::open_path(&path, progress)
    }

    /// Open an already resolved path (a folder or a file).
    pub fn open_path(
        path: &Path,
        progress: &dyn Fn(usize, usize),
    ) -> Result<ModelFiles, OpenError> {
        if path.is_file() {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if ext.eq_ignore_ascii_case("safetensors") {
                return Err(OpenError::LoneSafetensors {
                    path: path.to_path_buf(),
                });
            }
            return Ok(ModelFiles::Gguf(GgufModel::open_with_progress(
                path, progress,
            )?));
        }
        let folder = HfFolder::open(path)?;
        let weights = if folder.has_weights() {
            Some(folder.open_weights_with_progress(progress)?)
        } else {
            None
        };
        Ok(ModelFiles::Hf { folder, weights })
    }

    /// The folder or the (first) GGUF file.
    pub fn path(&self) -> &Path {
        match self {
            ModelFiles::Hf { folder, .. } => folder.path(),
            ModelFiles::Gguf(g) => g.files()[0].path(),
        }
    }

    /// The typed configuration, from `config.json` or from GGUF metadata.
    ///
    /// GGUF metadata does not say whether the LM head is tied to the embedding; a file without
    /// an `output.weight` tensor is tied (llama.cpp's converter drops the copy).
    pub fn config(&self) -> Result<ModelConfig, OpenError> {
        let config_err = |error| OpenError::Config {
            origin: self.config_origin(),
            error,
        };
        match self {
            ModelFiles::Hf { folder, .. } => {
                ModelConfig::from_hf_json(folder.config_json()).map_err(config_err)
            }
            ModelFiles::Gguf(g) => {
                let mut cfg = ModelConfig::from_gguf(g.metadata()).map_err(config_err)?;
                cfg.tie_word_embeddings = g.tensor("output.weight").is_none();
                Ok(cfg)
            }
        }
    }

    fn config_origin(&self) -> PathBuf {
        match self {
            ModelFiles::Hf { folder, .. } => folder.path().join("config.json"),
            ModelFiles::Gguf(g) => g.files()[0].path().to_path_buf(),
        }
    }

    /// The weights, if the model has any (a config-only folder has none).
    pub fn tensors(&self) -> Option<&dyn TensorSource> {
        match self {
            ModelFiles::Hf { weights, .. } => weights.as_ref().map(|w| w as &dyn TensorSource),
            ModelFiles::Gguf(g) => Some(g),
        }
    }

    /// The GGUF metadata (which also holds the tokenizer), for GGUF models.
    pub fn gguf_metadata(&self) -> Option<&Metadata> {
        match self {
            ModelFiles::Gguf(g) => Some(g.metadata()),
            ModelFiles::Hf { .. } => None,
        }
    }

    /// The Hugging Face folder, for folder models.
    pub fn hf_folder(&self) -> Option<&HfFolder> {
        match self {
            ModelFiles::Hf { folder, .. } => Some(folder),
            ModelFiles::Gguf(_) => None,
        }
    }

    /// Where `bytes` (a tensor view of this model) lies on disk: the file and the offset in
    /// it. `None` for bytes not in a mapped weight file (a converted or quantized copy).
    pub fn locate(&self, bytes: &[u8]) -> Option<(&Path, u64)> {
        match self {
            ModelFiles::Gguf(g) => g
                .files()
                .iter()
                .find_map(|f| f.offset_of(bytes).map(|o| (f.path(), o))),
            ModelFiles::Hf { weights, .. } => weights.as_ref().and_then(|w| {
                w.files()
                    .iter()
                    .find_map(|f| f.offset_of(bytes).map(|o| (f.path(), o)))
            }),
        }
    }

    /// `MADV_RANDOM` on every weight file's map: a touched page brings in only itself, not
    /// its neighbours (for a model whose routed experts are read by an expert cache, so that
    /// touching a dense tensor next to them does not page in experts). Best effort.
    pub fn advise_random(&self) {
        match self {
            ModelFiles::Gguf(g) => g.files().iter().for_each(|f| f.advise_random()),
            ModelFiles::Hf { weights, .. } => {
                if let Some(w) = weights {
                    w.files().iter().for_each(|f| f.advise_random());
                }
            }
        }
    }

    /// The chat template: `chat_template.jinja` or `tokenizer_config.json` in a folder,
    /// `tokenizer.chat_template` in GGUF metadata.
    pub fn chat_template(&self) -> Option<&str> {
        match self {
            ModelFiles::Hf { folder, .. } => folder.chat_template(),
            ModelFiles::Gguf(g) => g.metadata().get_str("tokenizer.chat_template"),
        }
    }
}

impl GgufKeyValues for Metadata {
    fn get_u64(&self, key: &str) -> Option<u64> {
        Metadata::get_u64(self, key)
    }
    fn get_f64(&self, key: &str) -> Option<f64> {
        Metadata::get_f64(self, key)
    }
    fn get_str(&self, key: &str) -> Option<&str> {
        Metadata::get_str(self, key)
    }
    fn get_bool(&self, key: &str) -> Option<bool> {
        Metadata::get_bool(self, key)
    }
    fn array_len(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(|v| v.as_array()).map(<[_]>::len)
    }
}
