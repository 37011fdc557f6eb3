//! `frugal pull ORG/NAME[@REV][:FILE]`: download a model from the Hugging Face hub into the
//! hub cache, in huggingface_hub's layout, where `frugal_formats::hf::resolve_model_path`
//! (and every other tool that reads that cache) finds it:
//!
//! ```text
//! $HF_HUB_CACHE/models--ORG--NAME/
//!   blobs/<etag>                  file contents, named by the hub's etag (sha256 for LFS files)
//!   blobs/<etag>.incomplete       a download in progress; continued with an HTTP Range request
//!   snapshots/<commit>/<file>     relative symlinks into ../blobs (copies where links fail)
//!   refs/<rev>                    the commit the revision pointed at
//! ```
//!
//! The cache root is the first of `$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`.
//! A blob already complete is never downloaded again.

mod hub;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use hub::Hub;

/// Arguments of `frugal pull`.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// ORG/NAME, optionally @REVISION, optionally :FILE (a name or a glob such as `*Q4_K_M*.gguf`).
    pub spec: String,
}

/// What a pull spec names.
#[derive(Debug, PartialEq, Eq)]
struct Spec<'a> {
    repo: &'a str,
    revision: &'a str,
    file: Option<&'a str>,
}

/// `ORG/NAME[@REV][:FILE]`.
fn parse_spec(spec: &str) -> anyhow::Result<Spec<'_>> {
    let (id, file) = match spec.split_once(':') {
        Some((id, file)) => (id, Some(file)),
        None => (spec, None),
    };
    let (repo, revision) = match id.split_once('@') {
        Some((repo, rev)) => (repo, rev),
        None => (id, "main"),
    };
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\']);
    let ok_repo = repo
        .split_once('/')
        .is_some_and(|(o, n)| plain(o) && plain(n));
    if !ok_repo || revision.is_empty() || file.is_some_and(str::is_empty) {
        bail!("{spec}: expected ORG/NAME, ORG/NAME@REVISION or ORG/NAME:FILE");
    }
    Ok(Spec {
        repo,
        revision,
        file,
    })
}

/// Files a model needs to run, besides its weights.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// The files of `files` that `spec` asks for.
fn select(spec: &Spec, files: &[String]) -> anyhow::Result<Vec<String>> {
    if let Some(pattern) = spec.file {
        let chosen: Vec<String> = files
            .iter()
            .filter(|f| glob_match(pattern, f))
            .cloned()
            .collect();
        if chosen.is_empty() {
            bail!(
                "{}: no file matches `{pattern}` (404: file not found in the repository)",
                spec.repo
            );
        }
        return Ok(chosen);
    }
    let is_weights =
        |f: &str| f.ends_with(".safetensors") || f.ends_with(".safetensors.index.json");
    let top_level = |f: &str| !f.contains('/');
    let chosen: Vec<String> = files
        .iter()
        .filter(|f| top_level(f) && (MODEL_FILES.contains(&f.as_str()) || is_weights(f)))
        .cloned()
        .collect();
    if !chosen.iter().any(|f| is_weights(f)) {
        let ggufs: Vec<&str> = files
            .iter()
            .map(String::as_str)
            .filter(|f| f.ends_with(".gguf"))
            .collect();
        if !ggufs.is_empty() {
            let shown = ggufs.iter().take(8).copied().collect::<Vec<_>>().join(", ");
            bail!(
                "{}: the repository holds GGUF files, choose one with {}:FILE (a glob works, \
                 e.g. {}:*Q4_K_M*.gguf): {shown}{}",
                spec.repo,
                spec.repo,
                spec.repo,
                if ggufs.len() > 8 { ", ..." } else { "" }
            );
        }
        bail!("{}: the repository has no safetensors weights", spec.repo);
    }
    Ok(chosen)
}

/// Shell-style glob: `*` any run of characters (folders included), `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matcher with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The hub cache root to write to.
fn cache_root() -> anyhow::Result<PathBuf> {
    frugal_formats::hf::default_cache_roots()
        .into_iter()
        .next()
        .context("no hub cache folder: set HF_HUB_CACHE, HF_HOME or HOME")
}

/// `frugal pull SPEC`.
pub fn run(args: &PullArgs) -> anyhow::Result<()> {
    let spec = parse_spec(&args.spec)?;
    let hub = Hub::from_env();
    let info = hub.repo_info(spec.repo, spec.revision)?;
    let files = select(&spec, &info.files)?;
    let (org, name) = spec
        .repo
        .split_once('/')
        .context("OK because parse_spec checked ORG/NAME")?;
    let repo_dir = cache_root()?.join(format!("models--{org}--{name}"));
    let blobs = repo_dir.join("blobs");
    let snapshot = repo_dir.join("snapshots").join(&info.commit);
    for dir in [&blobs, &snapshot] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bar = progress_bar();
    let (mut fetched, mut fetched_bytes, mut cached) = (0usize, 0u64, 0usize);
    for file in &files {
        let meta = hub.file_meta(spec.repo, &info.commit, file)?;
        if !plain_blob_name(&meta.etag) {
            bail!(
                "{}:{file}: the hub sent an unusable etag `{}`",
                spec.repo,
                meta.etag
            );
        }
        let blob = blobs.join(&meta.etag);
        if blob.is_file() {
            cached += 1;
        } else {
            bar.set_message(file.clone());
            bar.set_position(0);
            bar.set_length(meta.size.unwrap_or(0));
            let partial = blobs.join(format!("{}.incomplete", meta.etag));
            hub.download(spec.repo, file, &meta, &partial, |n| bar.inc(n))?;
            let got = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            if let Some(size) = meta.size.filter(|&s| s != got) {
                bail!(
                    "{}:{file}: downloaded {got} bytes, the hub said {size} (run again to retry)",
                    spec.repo
                );
            }
            std::fs::rename(&partial, &blob)
                .with_context(|| format!("moving {} into place", partial.display()))?;
            fetched += 1;
            fetched_bytes += got;
        }
        link(&snapshot, file, &meta.etag, &blob)?;
    }
    bar.finish_and_clear();
    write_ref(&repo_dir, spec.revision, &info.commit)?;
    eprintln!(
        "{}: {fetched} file(s) downloaded ({fetched_bytes} bytes), {cached} already in the cache",
        spec.repo
    );
    println!("{}", snapshot.display());
    Ok(())
}

/// An etag usable as a file name.
fn plain_blob_name(etag: &str) -> bool {
    !etag.is_empty()
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `snapshots/<commit>/<file>` → `../../blobs/<etag>` (one more `..` per folder in `file`).
fn link(snapshot: &Path, file: &str, etag: &str, blob: &Path) -> anyhow::Result<()> {
    if file
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        bail!("{file}: unsafe file name in the repository listing");
    }
    let dest = snapshot.join(file);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let depth = file.matches('/').count() + 2;
    let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
    if std::fs::read_link(&dest).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if dest.symlink_metadata().is_ok() {
        std::fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(&target, &dest).is_ok();
    #[cfg(not(unix))]
    let linked = false;
    if !linked {
        // Where links are not allowed, a copy (huggingface_hub does the same).
        std::fs::copy(blob, &dest).with_context(|| format!("copying into {}", dest.display()))?;
    }
    Ok(())
}

/// `refs/<revision>` holds the commit (not written when the revision is the commit itself).
fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> anyhow::Result<()> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, commit).with_context(|| format!("writing {}", path.display()))
}

/// Bytes of the current file; drawn only on a terminal (stderr), hidden in a pipe.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = parse_spec("org/name").unwrap();
        assert_eq!((s.repo, s.revision, s.file), ("org/name", "main", None));
        let s = parse_spec("org/name@v1:*Q4_K_M*.gguf").unwrap();
        assert_eq!(
            (s.repo, s.revision, s.file),
            ("org/name", "v1", Some("*Q4_K_M*.gguf"))
        );
        for bad in [
            "org",
            "org/",
            "/name",
            "a/b/c",
            "org/name:",
            "org/name@",
            "../x",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*Q4_K_M*.gguf", "model-Q4_K_M.gguf"));
        assert!(glob_match("*Q4_K_M*.gguf", "Q4_K_M/m-00001-of-00002.gguf"));
        assert!(!glob_match("*Q4_K_M*.gguf", "model-Q8_0.gguf"));
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "xconfig.json"));
        assert!(glob_match("m?del.*", "model.bin"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn selection() {
        let files: Vec<String> = [
            "config.json",
            "README.md",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "original/consolidated.safetensors",
            "modeling.py",
        ]
        .map(String::from)
        .to_vec();
        let spec = parse_spec("o/n").unwrap();
        assert_eq!(
            select(&spec, &files).unwrap(),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model.safetensors.index.json",
                "tokenizer.json"
            ]
        );
        let ggufs = ["a-Q4_K_M.gguf".to_string(), "a-Q8_0.gguf".to_string()];
        let err = select(&spec, &ggufs).unwrap_err().to_string();
        assert!(
            err.contains("o/n:FILE") && err.contains("a-Q8_0.gguf"),
            "{err}"
        );
    }
}
