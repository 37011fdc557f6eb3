//! Split models: `PREFIX-00001-of-0000N.gguf` ... `PREFIX-0000N-of-0000N.gguf`, as written by
//! llama.cpp's `gguf-split` and gguf-py's writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::GgufError;
use super::metadata::Metadata;
use super::{tensor_info, GgufFile};
use crate::tensor::{TensorInfo, TensorSource, TensorView};

/// `split.no`: this split's 0-based number.
pub const SPLIT_NO: &str = "split.no";
/// `split.count`: number of splits.
pub const SPLIT_COUNT: &str = "split.count";
/// `split.tensors.count`: number of tensors in all splits together.
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// A file name of the form `PREFIX-%05d-of-%05d.gguf` (numbers 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitName {
    /// The folder holding the splits.
    pub dir: PathBuf,
    /// The name before `-NNNNN-of-NNNNN.gguf`.
    pub prefix: String,
    /// This split's 1-based number.
    pub index: usize,
    /// Number of splits.
    pub count: usize,
}

impl SplitName {
    /// Recognizes a split file name; `None` for any other name.
    pub fn parse(path: &Path) -> Option<SplitName> {
        let name = path.file_name()?.to_str()?;
        let stem = name.strip_suffix(".gguf")?;
        let (rest, count) = stem.rsplit_once("-of-")?;
        let (prefix, index) = rest.rsplit_once('-')?;
        let number = |s: &str| -> Option<usize> {
            if s.len() >= 5 && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let (index, count) = (number(index)?, number(count)?);
        if prefix.is_empty() || index == 0 || index > count {
            return None;
        }
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        Some(SplitName {
            dir,
            prefix: prefix.to_owned(),
            index,
            count,
        })
    }

    /// The path of split `index` (1-based) of this set.
    pub fn path_of(&self, index: usize) -> PathBuf {
        self.dir.join(format!(
            "{}-{:05}-of-{:05}.gguf",
            self.prefix, index, self.count
        ))
    }
}

/// Every file of the split set `path` belongs to, in order; `None` if the name is not a split name.
pub fn split_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let s = SplitName::parse(path)?;
    Some((1..=s.count).map(|i| s.path_of(i)).collect())
}

/// A whole model: one GGUF file, or every split of a split model.
#[derive(Debug)]
pub struct GgufModel {
    files: Vec<GgufFile>,
    /// Tensor name → (file, entry within the file).
    by_name: HashMap<String, (usize, usize)>,
}

/// Checks that integer key `key` of split `path` is `expected` (when `required`, absence is an error).
fn check_split_key(
    path: &Path,
    md: &Metadata,
    key: &'static str,
    expected: u64,
    required: bool,
) -> Result<(), GgufError> {
    let found = match md.get(key) {
        None if !required => return Ok(()),
        None => "missing".to_owned(),
        Some(v) if v.as_u64() == Some(expected) => return Ok(()),
        Some(v) => format!("{} {v}", v.type_name()),
    };
    Err(GgufError::SplitMismatch {
        path: path.to_owned(),
        key,
        found,
        expected: expected.to_string(),
    })
}

impl GgufModel {
    /// Opens a model. A path of the form `PREFIX-0000K-of-0000N.gguf` (any K) opens all N
    /// splits; any other path opens that one file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufModel, GgufError> {
        GgufModel::open_with_progress(path, &|_, _| {})
    }

    /// As [`GgufModel::open`], calling `progress(files_opened, total)` after each file.
    pub fn open_with_progress(
        path: impl AsRef<Path>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<GgufModel, GgufError> {
        let path = path.as_ref();
        let Some(paths) = split_paths(path) else {
            let file = GgufFile::open(path)?;
            progress(1, 1);
            // A renamed split cannot find its siblings; say so instead of loading a part.
            let md = file.metadata();
            if md.get(SPLIT_COUNT).is_some() {
                check_split_key(path, md, SPLIT_COUNT, 1, true).map_err(|_| {
                    GgufError::SplitMismatch {
                        path: path.to_owned(),
                        key: SPLIT_COUNT,
                        found: md
                            .get(SPLIT_COUNT)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        expected:
                            "1, as the file name is not of the form PREFIX-NNNNN-of-NNNNN.gguf"
                                .to_owned(),
                    }
                })?;
            }
            return GgufModel::from_files(vec![file]);
        };

        let count = paths.len();
        for (i, p) in paths.iter().enumerate() {
            if !p.is_file() {
                return Err(GgufError::MissingSplit {
                    path: p.clone(),
                    index: i + 1,
                    count,
                });
            }
        }
        let mut files = Vec::with_capacity(count);
        for (i, p) in paths.iter().enumerate() {
            let file = GgufFile::open(p)?;
            // A lone file named `-00001-of-00001` need not carry split keys.
            let required = count > 1;
            check_split_key(p, file.metadata(), SPLIT_NO, i as u64, required)?;
            check_split_key(p, file.metadata(), SPLIT_COUNT, count as u64, required)?;
            files.push(file);
            progress(i + 1, count);
        }
        let found: u64 = files.iter().map(|f| f.gguf_tensors().len() as u64).sum();
        let first = &files[0];
        match first.metadata().get(SPLIT_TENSORS_COUNT) {
            None if count == 1 => {}
            Some(v) if v.as_u64() == Some(found) => {}
            Some(v) => match v.as_u64() {
                Some(expected) => return Err(GgufError::SplitTensorCount { expected, found }),
                None => {
                    return Err(GgufError::SplitMismatch {
                        path: first.path().to_owned(),
                        key: SPLIT_TENSORS_COUNT,
                        found: format!("{} {v}", v.type_name()),
                        expected: "a non-negative integer".to_owned(),
                    })
                }
            },
            None => {
                return Err(GgufError::SplitMismatch {
                    path: first.path().to_owned(),
                    key: SPLIT_TENSORS_COUNT,
                    found: "missing".to_owned(),
                    expected: found.to_string(),
                })
            }
        }
        GgufModel::from_files(files)
    }

    /// Indexes the tensors of `files`, rejecting a name that appears in two of them.
    fn from_files(files: Vec<GgufFile>) -> Result<GgufModel, GgufError> {
        let mut by_name: HashMap<String, (usize, usize)> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            for (ti, t) in f.gguf_tensors().iter().enumerate() {
                if let Some(&(prev, _)) = by_name.get(&t.name) {
                    return Err(GgufError::DuplicateTensorAcrossSplits {
                        name: t.name.clone(),
                        first: files[prev].path().to_owned(),
                        second: f.path().to_owned(),
                    });
                }
                by_name.insert(t.name.clone(), (fi, ti));
            }
        }
        Ok(GgufModel { files, by_name })
    }

    /// The model's metadata (that of the first split, which holds it all).
    pub fn metadata(&self) -> &Metadata {
        self.files[0].metadata()
    }

    /// `general.architecture` of the first split.
    pub fn architecture(&self) -> Option<&str> {
        self.files[0].architecture()
    }

    /// The files, in split order (one for an unsplit model).
    pub fn files(&self) -> &[GgufFile] {
        &self.files
    }
}

impl TensorSource for GgufModel {
    fn tensor_infos(&self) -> Vec<TensorInfo> {
        self.files
            .iter()
            .flat_map(|f| f.gguf_tensors().iter().map(tensor_info))
            .collect()
    }

    fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let &(fi, ti) = self.by_name.get(name)?;
        let f = &self.files[fi];
        Some(f.view_of(&f.gguf_tensors()[ti]))
    }

    fn release(&self, bytes: &[u8]) {
        // Only the file that maps them acts (the others find no offset).
        self.files.iter().for_each(|f| f.release(bytes));
    }

    fn populate(&self, bytes: &[u8]) {
        self.files.iter().for_each(|f| f.populate(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        let s = SplitName::parse(Path::new("/m/DeepSeek-R1-Q4_K_M-00002-of-00009.gguf"))
            .expect("OK because this is a split name");
        assert_eq!(s.prefix, "DeepSeek-R1-Q4_K_M");
        assert_eq!((s.index, s.count), (2, 9));
        assert_eq!(
            s.path_of(9),
            Path::new("/m/DeepSeek-R1-Q4_K_M-00009-of-00009.gguf")
        );
        for bad in [
            "m.gguf",
            "m-1-of-2.gguf",
            "m-00003-of-00002.gguf",
            "m-00000-of-00002.gguf",
            "-00001-of-00002.gguf",
            "m-00001-of-00002.bin",
        ] {
            assert_eq!(SplitName::parse(Path::new(bad)), None, "{bad}");
        }
    }
}
