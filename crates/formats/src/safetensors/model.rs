//! A model's safetensors weights spread over one or more files (shards).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::{SafetensorsError, SafetensorsFile};
use crate::tensor::{TensorInfo, TensorSource, TensorView};

/// The name transformers gives the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The name transformers gives an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// `model.safetensors.index.json`: `{"metadata": {"total_size": ...}, "weight_map": {tensor: shard}}`.
#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// A set of safetensors files seen as one [`TensorSource`]. Each file is mapped once.
#[derive(Debug)]
pub struct SafetensorsModel {
    dir: PathBuf,
    index: Option<PathBuf>,
    files: Vec<SafetensorsFile>,
    /// Tensor name → (file, position in that file's entries).
    by_name: HashMap<String, (usize, usize)>,
    /// Every tensor: files in order, each file's tensors in offset order.
    order: Vec<(usize, usize)>,
}

impl SafetensorsModel {
    /// Opens the weights in `dir`: the shards named by `model.safetensors.index.json` when it
    /// exists, else `model.safetensors`, else every `*.safetensors` file (in sorted order).
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self, SafetensorsError> {
        Self::open_dir_with_progress(dir, &|_, _| {})
    }

    /// [`open_dir`](Self::open_dir), calling `progress(files_opened, total_files)` after each
    /// file is mapped and validated.
    pub fn open_dir_with_progress(
        dir: impl AsRef<Path>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self, SafetensorsError> {
        let dir = dir.as_ref().to_path_buf();
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_indexed(dir, index, progress);
        }
        let single = dir.join(SINGLE_FILE);
        let paths = if single.is_file() {
            vec![single]
        } else {
            list_safetensors(&dir)?
        };
        if paths.is_empty() {
            return Err(SafetensorsError::NoWeights { dir });
        }
        let files = open_all(&paths, progress)?;
        Self::assemble(dir, None, files)
    }

    /// One file as a model.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self, SafetensorsError> {
        let file = SafetensorsFile::open(path.as_ref())?;
        let dir = path
            .as_ref()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Self::assemble(dir, None, vec![file])
    }

    fn open_indexed(
        dir: PathBuf,
        index: PathBuf,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Self, SafetensorsError> {
        let bad_index = |message: String| SafetensorsError::InvalidIndex {
            path: index.clone(),
            message,
        };
        let text = std::fs::read_to_string(&index).map_err(|source| SafetensorsError::Io {
            path: index.clone(),
            source,
        })?;
        let parsed: IndexFile =
            serde_json::from_str(&text).map_err(|e| bad_index(e.to_string()))?;
        if parsed.weight_map.is_empty() {
            return Err(bad_index("`weight_map` is empty".into()));
        }

        // Shard file name → one tensor it should hold (for error messages), in sorted order.
        let mut shards: BTreeMap<&str, &str> = BTreeMap::new();
        for (tensor, shard) in &parsed.weight_map {
            shards.entry(shard).or_insert(tensor);
        }
        let mut paths = Vec::with_capacity(shards.len());
        for (&shard, &tensor) in &shards {
            // The index is file content: refuse names that would leave the model folder.
            let plain = !shard.is_empty()
                && Path::new(shard)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err(bad_index(format!(
                    "shard name `{shard}` (for tensor `{tensor}`) is not a relative file name"
                )));
            }
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(SafetensorsError::MissingShard {
                    index,
                    shard: shard.into(),
                    tensor: tensor.into(),
                });
            }
            paths.push(path);
        }
        let files = open_all(&paths, progress)?;
        let model = Self::assemble(dir, Some(index.clone()), files)?;

        let shard_pos: HashMap<&str, usize> =
            shards.keys().enumerate().map(|(i, &s)| (s, i)).collect();
        for (tensor, shard) in &parsed.weight_map {
            let want = shard_pos[shard.as_str()];
            if model.by_name.get(tensor).map(|&(f, _)| f) != Some(want) {
                return Err(SafetensorsError::TensorMissingFromShard {
                    index,
                    shard: model.files[want].path().to_path_buf(),
                    tensor: tensor.clone(),
                });
            }
        }
        Ok(model)
    }

    fn assemble(
        dir: PathBuf,
        index: Option<PathBuf>,
        files: Vec<SafetensorsFile>,
    ) -> Result<Self, SafetensorsError> {
        let total: usize = files.iter().map(SafetensorsFile::len).sum();
        let mut by_name = HashMap::with_capacity(total);
        let mut order = Vec::with_capacity(total);
        for (f, file) in files.iter().enumerate() {
            for (i, entry) in file.entries.iter().enumerate() {
                if let Some(&(first, _)) = by_name.get(entry.name.as_str()) {
                    let first: &SafetensorsFile = &files[first];
                    return Err(SafetensorsError::DuplicateTensor {
                        tensor: entry.name.clone(),
                        first: first.path().to_path_buf(),
                        second: file.path().to_path_buf(),
                    });
                }
                by_name.insert(entry.name.clone(), (f, i));
                order.push((f, i));
            }
        }
        Ok(SafetensorsModel {
            dir,
            index,
            files,
            by_name,
            order,
        })
    }

    /// The folder the weights were found in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard index, when the weights came from one.
    pub fn index_path(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// The files, in the order their tensors are listed.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// The file holding the named tensor.
    pub fn file_of(&self, name: &str) -> Option<&SafetensorsFile> {
        self.by_name.get(name).map(|&(f, _)| &self.files[f])
    }

    /// Number of tensors over all files.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there is no tensor at all.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl TensorSource for SafetensorsModel {
    fn tensor_infos(&self) -> Vec<TensorInfo> {
        self.order
            .iter()
            .map(|&(f, i)| SafetensorsFile::info_of(&self.files[f].entries[i]))
            .collect()
    }

    fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let &(f, i) = self.by_name.get(name)?;
        let file = &self.files[f];
        Some(file.view_of(&file.entries[i]))
    }

    fn populate(&self, bytes: &[u8]) {
        // Only the file that maps them acts (the others find no offset).
        self.files.iter().for_each(|f| f.populate(bytes));
    }
}

fn open_all(
    paths: &[PathBuf],
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<SafetensorsFile>, SafetensorsError> {
    let mut files = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        files.push(SafetensorsFile::open(path)?);
        progress(i + 1, paths.len());
    }
    Ok(files)
}

/// Every regular `*.safetensors` file directly in `dir`, sorted by name.
fn list_safetensors(dir: &Path) -> Result<Vec<PathBuf>, SafetensorsError> {
    let io = |source| SafetensorsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "safetensors") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}
