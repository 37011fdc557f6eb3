//! The embedded default model: what `frugal run` and `frugal chat` use without `--model`.
//!
//! `assets/default-model` is a tiny DeepSeek-V3 (MLA with q_lora, one dense layer then MoE
//! layers with a shared expert and sigmoid-routed experts whose correction bias was trained with
//! the auxiliary-loss-free rule) trained by `tools/train_default_model.py` to add and subtract
//! numbers of up to four digits. It thinks in an R1-style `<think>` block, one column per line,
//! then answers: `frugal run "What is 4821 + 377?"`. The folder is about a megabyte and is
//! compiled into the binary.
//!
//! The files are written once to `$XDG_CACHE_HOME/frugal/` (else `~/.cache/frugal/`, else the
//! temp dir), in a folder named by their content hash, and opened from there like any folder:
//! the weights are then memory-mapped, not copied.

use std::hash::Hasher;
use std::path::PathBuf;

use anyhow::Context;

/// (file name, bytes) of the embedded model folder.
const FILES: &[(&str, &[u8])] = &[
    (
        "config.json",
        include_bytes!("../../../assets/default-model/config.json"),
    ),
    (
        "generation_config.json",
        include_bytes!("../../../assets/default-model/generation_config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../../assets/default-model/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../../assets/default-model/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../../assets/default-model/tokenizer_config.json"),
    ),
];

/// The folder holding the default model, written on first use.
pub fn path() -> anyhow::Result<PathBuf> {
    // Content hash: `DefaultHasher::new()` has fixed keys, so a build always names the same folder.
    let mut hasher = std::hash::DefaultHasher::new();
    for (name, bytes) in FILES {
        hasher.write(name.as_bytes());
        hasher.write(bytes);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base
        .join("frugal")
        .join(format!("default-model-{:016x}", hasher.finish()));
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    // Write into a fresh sibling folder, then rename: a concurrent run never sees half a model.
    let parent = dir.parent().context("cache folder has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for (name, bytes) in FILES {
        std::fs::write(tmp.join(name), bytes).with_context(|| format!("writing {name}"))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process got there first; theirs is identical.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join("config.json").is_file() {
            return Err(e).with_context(|| format!("installing {}", dir.display()));
        }
    }
    Ok(dir)
}
