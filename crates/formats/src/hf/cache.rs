//! Finding a model: a path, or an `ORG/NAME[@REV]` id looked up in the hub cache.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::HfError;

/// The hub cache folders to search, from the process environment: `$HF_HUB_CACHE`,
/// `$HF_HOME/hub`, `~/.cache/huggingface/hub` (those that are set, in that order).
pub fn default_cache_roots() -> Vec<PathBuf> {
    cache_roots_from_env(|k| std::env::var_os(k))
}

/// [`default_cache_roots`] with the environment given as a function (for tests).
pub fn cache_roots_from_env(env: impl Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut roots = Vec::new();
    roots.extend(set("HF_HUB_CACHE"));
    roots.extend(set("HF_HOME").map(|h| h.join("hub")));
    roots.extend(set("HOME").map(|h| h.join(".cache/huggingface/hub")));
    roots.dedup();
    roots
}

/// Resolves `spec` to a model folder or `.gguf` file, searching [`default_cache_roots`].
/// See [`resolve_model_path_in`].
pub fn resolve_model_path(spec: &str) -> Result<PathBuf, HfError> {
    resolve_model_path_in(spec, &default_cache_roots())
}

/// Resolves `spec`:
///
/// 1. an existing path: a model folder (with `config.json`, or with `.gguf`/`.safetensors`
///    files) is returned as is; a `models--ORG--NAME` cache folder resolves to its snapshot for
///    `refs/main` (else its only snapshot, else the most recently modified); a `.gguf` or
///    `.safetensors` file is returned as is;
/// 2. otherwise `ORG/NAME` or `ORG/NAME@REV` (`REV` a ref such as `main`, or a commit) is looked
///    up as `ROOT/models--ORG--NAME` in each of `roots` in turn.
///
/// When nothing matches, the error lists every path tried.
pub fn resolve_model_path_in(spec: &str, roots: &[PathBuf]) -> Result<PathBuf, HfError> {
    let path = Path::new(spec);
    if path.exists() {
        return resolve_existing(path);
    }
    let Some((org, name, revision)) = parse_repo_id(spec) else {
        // Not an ORG/NAME id, so a path that is not there.
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "does not exist");
        return Err(HfError::Io {
            path: path.to_path_buf(),
            source,
        });
    };
    let mut searched = vec![path.to_path_buf()];
    for root in roots {
        let repo = root.join(format!("models--{org}--{name}"));
        if repo.is_dir() {
            return snapshot(&repo, revision);
        }
        searched.push(repo);
    }
    Err(HfError::NotFound {
        spec: spec.into(),
        searched,
    })
}

/// `ORG/NAME` or `ORG/NAME@REV`, each part non-empty and free of path syntax.
fn parse_repo_id(spec: &str) -> Option<(&str, &str, Option<&str>)> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    let (org, name) = id.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\']);
    (plain(org) && plain(name) && revision.is_none_or(plain)).then_some((org, name, revision))
}

fn resolve_existing(path: &Path) -> Result<PathBuf, HfError> {
    if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        return match ext {
            "gguf" | "safetensors" => Ok(path.to_path_buf()),
            _ => Err(HfError::NotAModel { path: path.into() }),
        };
    }
    if path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let is_cache_repo = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("models--"))
        || path.join("snapshots").is_dir();
    if is_cache_repo {
        return snapshot(path, None);
    }
    let io = |source| HfError::Io {
        path: path.into(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.is_file()
            && p.extension()
                .is_some_and(|e| e == "gguf" || e == "safetensors")
        {
            return Ok(path.to_path_buf());
        }
    }
    Err(HfError::NotAModel { path: path.into() })
}

/// The snapshot folder of cache repository `repo` for `revision` (default: `main`).
fn snapshot(repo: &Path, revision: Option<&str>) -> Result<PathBuf, HfError> {
    let snapshots = repo.join("snapshots");
    let rev = revision.unwrap_or("main");
    // A ref (`refs/main`) holds a commit hash; a commit hash names the snapshot directly.
    let commit = std::fs::read_to_string(repo.join("refs").join(rev))
        .ok()
        .map(|s| s.trim().to_string());
    for candidate in commit.iter().map(String::as_str).chain(revision) {
        let dir = snapshots.join(candidate);
        if !candidate.is_empty() && dir.is_dir() {
            return Ok(dir);
        }
    }
    if let Some(revision) = revision {
        return Err(HfError::RevisionNotFound {
            path: repo.into(),
            revision: revision.into(),
        });
    }
    if let Some(c) = &commit {
        tracing::warn!(
            "{}: refs/main names {c}, which is not in snapshots/; using another snapshot",
            repo.display()
        );
    }
    let io = |source| HfError::Io {
        path: snapshots.clone(),
        source,
    };
    let mut found = Vec::new();
    if snapshots.is_dir() {
        for entry in std::fs::read_dir(&snapshots).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.path().is_dir() {
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                found.push((modified, entry.path()));
            }
        }
    }
    // The only one, else the newest (ties broken by name so the choice is stable).
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| HfError::NoSnapshot { path: repo.into() })
}
