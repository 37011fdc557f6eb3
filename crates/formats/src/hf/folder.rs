//! One model folder, as `save_pretrained` writes it (or a hub cache snapshot of one).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{read_json, GenerationConfig, HfError, TokenizerConfig};
use crate::safetensors::SafetensorsModel;

/// A Hugging Face model folder: `config.json`, tokenizer files and (optionally) weights.
#[derive(Clone, Debug)]
pub struct HfFolder {
    path: PathBuf,
    config: Value,
    tokenizer_config: Option<TokenizerConfig>,
    generation_config: Option<GenerationConfig>,
    special_tokens_map: Option<Value>,
    chat_template_file: Option<String>,
}

impl HfFolder {
    /// Reads the folder's small files. Weights are not touched; see [`open_weights`](Self::open_weights).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, HfError> {
        let path = path.as_ref().to_path_buf();
        let config_path = path.join("config.json");
        if !config_path.is_file() {
            if !path.is_dir() {
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder");
                return Err(HfError::Io { path, source });
            }
            return Err(HfError::NotAModelFolder { path });
        }
        let config = read_json(&config_path)?;
        if !config.is_object() {
            return Err(HfError::InvalidField {
                path: config_path,
                key: String::new(),
                message: "config.json is not a JSON object".into(),
            });
        }
        let optional = |name: &str| Some(path.join(name)).filter(|p| p.is_file());
        let tokenizer_config = optional("tokenizer_config.json")
            .map(|p| TokenizerConfig::from_file(&p))
            .transpose()?;
        let generation_config = optional("generation_config.json")
            .map(|p| GenerationConfig::from_file(&p))
            .transpose()?;
        let special_tokens_map = optional("special_tokens_map.json")
            .map(|p| read_json(&p))
            .transpose()?;
        let chat_template_file = optional("chat_template.jinja")
            .map(|p| std::fs::read_to_string(&p).map_err(|source| HfError::Io { path: p, source }))
            .transpose()?;
        Ok(HfFolder {
            path,
            config,
            tokenizer_config,
            generation_config,
            special_tokens_map,
            chat_template_file,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.json`, unparsed (the typed view is [`crate::config`]'s job).
    pub fn config_json(&self) -> &Value {
        &self.config
    }

    /// `tokenizer.json`, if the folder has one.
    pub fn tokenizer_json_path(&self) -> Option<PathBuf> {
        Some(self.path.join("tokenizer.json")).filter(|p| p.is_file())
    }

    /// `tokenizer_config.json`, parsed.
    pub fn tokenizer_config(&self) -> Option<&TokenizerConfig> {
        self.tokenizer_config.as_ref()
    }

    /// `generation_config.json`, parsed.
    pub fn generation_config(&self) -> Option<&GenerationConfig> {
        self.generation_config.as_ref()
    }

    /// `special_tokens_map.json`, unparsed.
    pub fn special_tokens_map(&self) -> Option<&Value> {
        self.special_tokens_map.as_ref()
    }

    /// The contents of `chat_template.jinja`, if present.
    pub fn chat_template_file(&self) -> Option<&str> {
        self.chat_template_file.as_deref()
    }

    /// The chat template to use: `chat_template.jinja` when present (newer transformers save
    /// the template there and load it in preference), else `tokenizer_config.json`'s default.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template_file()
            .or_else(|| self.tokenizer_config()?.chat_template())
    }

    /// Whether the folder holds safetensors weights (an index or any `*.safetensors` file).
    pub fn has_weights(&self) -> bool {
        if self.path.join("model.safetensors.index.json").is_file() {
            return true;
        }
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return false;
        };
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "safetensors") && e.path().is_file())
    }

    /// Maps the weights (see [`SafetensorsModel::open_dir`]).
    pub fn open_weights(&self) -> Result<SafetensorsModel, HfError> {
        Ok(SafetensorsModel::open_dir(&self.path)?)
    }

    /// [`open_weights`](Self::open_weights), reporting `(files_opened, total_files)`.
    pub fn open_weights_with_progress(
        &self,
        progress: &dyn Fn(usize, usize),
    ) -> Result<SafetensorsModel, HfError> {
        Ok(SafetensorsModel::open_dir_with_progress(
            &self.path, progress,
        )?)
    }
}
