//! Model folders, tokenizer/generation configs and hub cache lookup.
//!
//! Real files come from the shared reference data (`FRUGAL_REFERENCE_DIR`, else
//! `<workspace>/../shared/reference`); their expected special tokens are those listed in
//! `configs/SOURCES.md` (taken from openvino.genai's table, independent of the files).

use std::path::{Path, PathBuf};

use frugal_formats::hf::{
    cache_roots_from_env, resolve_model_path_in, GenerationConfig, HfError, HfFolder,
    TokenizerConfig,
};
use frugal_formats::TensorSource;
use serde_json::json;

use frugal_testdata::reference_dir;

fn configs() -> PathBuf {
    reference_dir().join("configs")
}

fn st_fixtures() -> PathBuf {
    frugal_testdata::fixtures_dir().join("formats/safetensors")
}

const DS_BOS: &str = "<｜begin▁of▁sentence｜>";
const DS_EOS: &str = "<｜end▁of▁sentence｜>";

#[test]
fn deepseek_v3_tokenizer_config() {
    let path = configs().join("deepseek-ai__DeepSeek-V3/tokenizer_config.json");
    let tc = TokenizerConfig::from_file(&path).unwrap();
    assert_eq!(tc.bos_token.as_deref(), Some(DS_BOS));
    assert_eq!(tc.eos_token.as_deref(), Some(DS_EOS));
    assert_eq!(tc.pad_token.as_deref(), Some(DS_EOS));
    assert_eq!(tc.unk_token, None);
    assert_eq!(tc.add_bos_token, Some(true));
    assert_eq!(tc.add_eos_token, Some(false));
    assert_eq!(tc.model_max_length, Some(131072));
    let t = tc.chat_template().expect("V3 has a chat template");
    assert!(
        t.starts_with("{% if not add_generation_prompt is defined %}"),
        "{t}"
    );
    assert!(t.contains("<｜Assistant｜>"));
    assert_eq!(tc.chat_template_names().collect::<Vec<_>>(), ["default"]);
    assert_eq!(tc.raw()["tokenizer_class"], "LlamaTokenizerFast");
}

#[test]
fn reference_folders_open_config_only() {
    // V3: config.json + tokenizer_config.json, no weights.
    let v3 = HfFolder::open(configs().join("deepseek-ai__DeepSeek-V3")).unwrap();
    assert_eq!(v3.config_json()["model_type"], "deepseek_v3");
    assert!(!v3.has_weights());
    assert!(v3.tokenizer_json_path().is_none());
    assert!(v3.generation_config().is_none());
    assert_eq!(
        v3.tokenizer_config().unwrap().bos_token.as_deref(),
        Some(DS_BOS)
    );
    assert!(v3
        .chat_template()
        .unwrap()
        .starts_with("{% if not add_generation_prompt"));
    assert!(matches!(v3.open_weights(), Err(HfError::Weights(_))));

    // R1: config.json + chat_template.jinja.
    let dir = configs().join("deepseek-ai__DeepSeek-R1");
    let r1 = HfFolder::open(&dir).unwrap();
    let jinja = std::fs::read_to_string(dir.join("chat_template.jinja")).unwrap();
    assert_eq!(r1.chat_template(), Some(jinja.as_str()));
    assert!(r1.tokenizer_config().is_none());

    // A folder without config.json.
    let e = HfFolder::open(configs().join("Qwen__Qwen3-1.7B")).unwrap_err();
    assert!(matches!(e, HfError::NotAModelFolder { .. }), "{e}");
}

#[test]
fn jinja_file_takes_precedence() {
    for model in [
        "deepseek-ai__DeepSeek-R1",
        "Qwen__Qwen3-1.7B",
        "Qwen__Qwen3-8B-Base",
        "mistralai__Mixtral-8x7B-Instruct-v0.1",
        "deepseek-ai__DeepSeek-R1-Distill-Llama-8B",
        "deepseek-ai__DeepSeek-V2-Lite-Chat",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let v3 = configs().join("deepseek-ai__DeepSeek-V3");
        std::fs::copy(v3.join("config.json"), dir.path().join("config.json")).unwrap();
        std::fs::copy(
            v3.join("tokenizer_config.json"),
            dir.path().join("tokenizer_config.json"),
        )
        .unwrap();
        let jinja =
            std::fs::read_to_string(configs().join(model).join("chat_template.jinja")).unwrap();
        std::fs::write(dir.path().join("chat_template.jinja"), &jinja).unwrap();
        let f = HfFolder::open(dir.path()).unwrap();
        assert_eq!(f.chat_template(), Some(jinja.as_str()), "{model}");
        assert_ne!(
            f.tokenizer_config().unwrap().chat_template(),
            Some(jinja.as_str()),
            "{model}"
        );
    }
}

fn tc(v: serde_json::Value) -> Result<TokenizerConfig, HfError> {
    TokenizerConfig::from_value(Path::new("tokenizer_config.json"), v)
}

#[test]
fn tokenizer_config_forms() {
    // transformers writes int(1e30) for "no limit"; serde_json reads it as a float.
    let t = tc(serde_json::from_str(
        r#"{
        "chat_template": [
            {"name": "default", "template": "D"},
            {"name": "tool_use", "template": "T"}
        ],
        "bos_token": "<s>",
        "eos_token": {"content": "</s>", "lstrip": false},
        "unk_token": null,
        "model_max_length": 1000000000000000019884624838656
    }"#,
    )
    .unwrap())
    .unwrap();
    assert_eq!(t.chat_template(), Some("D"));
    assert_eq!(t.chat_template_named("tool_use"), Some("T"));
    assert_eq!(t.bos_token.as_deref(), Some("<s>"));
    assert_eq!(t.eos_token.as_deref(), Some("</s>"));
    assert_eq!(t.unk_token, None);
    assert_eq!(t.pad_token, None);
    assert_eq!(
        t.model_max_length, None,
        "transformers' 1e30 means no limit"
    );

    let t = tc(json!({"chat_template": [{"name": "rag", "template": "R"}]})).unwrap();
    assert_eq!(t.chat_template(), None);
    assert_eq!(t.chat_template_named("rag"), Some("R"));

    for (bad, key) in [
        (json!({"bos_token": 3}), "bos_token"),
        (json!({"eos_token": {"lstrip": true}}), "eos_token"),
        (json!({"add_bos_token": "yes"}), "add_bos_token"),
        (json!({"chat_template": 7}), "chat_template"),
        (json!({"chat_template": [{"name": "x"}]}), "chat_template"),
        (json!({"model_max_length": -5}), "model_max_length"),
    ] {
        match tc(bad.clone()) {
            Err(HfError::InvalidField { key: k, .. }) => assert_eq!(k, key, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

fn gc(v: serde_json::Value) -> Result<GenerationConfig, HfError> {
    GenerationConfig::from_value(Path::new("generation_config.json"), &v)
}

#[test]
fn generation_config_forms() {
    // Shaped like the files transformers writes (`_from_model_config`, version key, ...).
    let g = gc(json!({
        "_from_model_config": true, "bos_token_id": 0, "eos_token_id": 1, "do_sample": true,
        "temperature": 0.6, "top_p": 0.95, "transformers_version": "4.46.3"
    }))
    .unwrap();
    assert_eq!(g.bos_token_id, Some(0));
    assert_eq!(g.eos_token_id, [1]);
    assert_eq!(g.do_sample, Some(true));
    assert_eq!(g.temperature, Some(0.6));
    assert_eq!(g.top_p, Some(0.95));
    assert_eq!(g.top_k, None);

    let g = gc(json!({
        "eos_token_id": [151645, 151643], "pad_token_id": 151643, "top_k": 20, "min_p": 0,
        "repetition_penalty": 1.05, "max_new_tokens": 512, "max_length": 32768.0, "bos_token_id": null
    }))
    .unwrap();
    assert_eq!(g.eos_token_id, [151645, 151643]);
    assert_eq!(g.pad_token_id, Some(151643));
    assert_eq!(g.top_k, Some(20));
    assert_eq!(g.min_p, Some(0.0));
    assert_eq!(g.repetition_penalty, Some(1.05));
    assert_eq!(g.max_new_tokens, Some(512));
    assert_eq!(g.max_length, Some(32768));
    assert_eq!(g.bos_token_id, None);

    for (bad, key) in [
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"eos_token_id": "2"}), "eos_token_id"),
        (json!({"eos_token_id": [1, -2]}), "eos_token_id"),
        (json!({"bos_token_id": 1.5}), "bos_token_id"),
        (json!({"do_sample": 1}), "do_sample"),
        (json!({"max_new_tokens": -1}), "max_new_tokens"),
        (json!({"top_k": "all"}), "top_k"),
    ] {
        match gc(bad.clone()) {
            Err(HfError::InvalidField { key: k, .. }) => assert_eq!(k, key, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn bad_json_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    std::fs::write(dir.path().join("generation_config.json"), "{\"top_p\": [}").unwrap();
    let e = HfFolder::open(dir.path()).unwrap_err();
    assert!(
        matches!(&e, HfError::Json { path, .. } if path.ends_with("generation_config.json")),
        "{e}"
    );
    std::fs::write(
        dir.path().join("generation_config.json"),
        "{\"top_p\": \"x\"}",
    )
    .unwrap();
    let e = HfFolder::open(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("generation_config.json") && e.to_string().contains("top_p"),
        "{e}"
    );
    std::fs::write(dir.path().join("config.json"), "[1]").unwrap();
    assert!(HfFolder::open(dir.path()).is_err());
}

/// Lays out `CACHE/models--acme--tiny-moe` as huggingface_hub does: blobs named by content,
/// snapshot files as relative symlinks into them, `refs/main` naming the newest commit.
#[cfg(unix)]
fn fake_cache(root: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let repo = root.join("models--acme--tiny-moe");
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let src = st_fixtures().join("sharded");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let config = configs().join("deepseek-ai__DeepSeek-V3/config.json");
    files.push(config);
    for (commit, n_files) in [("0123old", 1), ("89abnew", files.len())] {
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        for (i, f) in files.iter().rev().take(n_files).enumerate() {
            let blob = format!("{commit}{i:04}");
            std::fs::copy(f, blobs.join(&blob)).unwrap();
            symlink(
                Path::new("../../blobs").join(&blob),
                snap.join(f.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "89abnew").unwrap();
    std::fs::write(repo.join("refs/v1"), "0123old\n").unwrap();
    repo
}

#[cfg(unix)]
#[test]
fn hub_cache_layout() {
    let home = tempfile::tempdir().unwrap();
    let hub = home.path().join(".cache/huggingface/hub");
    let repo = fake_cache(&hub);
    let newest = repo.join("snapshots/89abnew");
    let missing = home.path().join("no-such-cache");
    let roots = vec![missing.clone(), hub.clone()];

    assert_eq!(
        resolve_model_path_in("acme/tiny-moe", &roots).unwrap(),
        newest
    );
    assert_eq!(
        resolve_model_path_in("acme/tiny-moe@main", &roots).unwrap(),
        newest
    );
    assert_eq!(
        resolve_model_path_in("acme/tiny-moe@v1", &roots).unwrap(),
        repo.join("snapshots/0123old")
    );
    assert_eq!(
        resolve_model_path_in("acme/tiny-moe@0123old", &roots).unwrap(),
        repo.join("snapshots/0123old")
    );
    let e = resolve_model_path_in("acme/tiny-moe@nope", &roots).unwrap_err();
    assert!(
        matches!(&e, HfError::RevisionNotFound { revision, .. } if revision == "nope"),
        "{e}"
    );

    // By path: the repo folder, a snapshot, a .gguf file.
    let repo_str = repo.to_str().unwrap();
    assert_eq!(resolve_model_path_in(repo_str, &[]).unwrap(), newest);
    assert_eq!(
        resolve_model_path_in(newest.to_str().unwrap(), &[]).unwrap(),
        newest
    );
    let gguf = home.path().join("m.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    assert_eq!(
        resolve_model_path_in(gguf.to_str().unwrap(), &[]).unwrap(),
        gguf
    );

    // Without refs/main: the only snapshot, else the newest one.
    std::fs::remove_file(repo.join("refs/main")).unwrap();
    let old = repo.join("snapshots/0123old");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::open(&old)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(resolve_model_path_in(repo_str, &[]).unwrap(), old);
    std::fs::remove_dir_all(&newest).unwrap();
    assert_eq!(resolve_model_path_in("acme/tiny-moe", &roots).unwrap(), old);
    std::fs::remove_dir_all(&old).unwrap();
    let e = resolve_model_path_in(repo_str, &[]).unwrap_err();
    assert!(matches!(e, HfError::NoSnapshot { .. }), "{e}");

    // Not found: every place searched is listed.
    let e = resolve_model_path_in("acme/other", &roots).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, HfError::NotFound { searched, .. } if searched.len() == 3),
        "{msg}"
    );
    assert!(
        msg.contains(missing.join("models--acme--other").to_str().unwrap()),
        "{msg}"
    );
    assert!(
        msg.contains(hub.join("models--acme--other").to_str().unwrap()),
        "{msg}"
    );
    // Not an ORG/NAME id and not an existing path: the path does not exist (no cache search).
    for spec in ["just-a-name", "a/b/c", "../x", "acme/.."] {
        let e = resolve_model_path_in(spec, &roots).unwrap_err();
        assert!(matches!(e, HfError::Io { .. }), "{spec}: {e}");
        assert!(e.to_string().contains("does not exist"), "{spec}: {e}");
    }
    let plain = home.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("notes.txt"), "hi").unwrap();
    let e = resolve_model_path_in(plain.to_str().unwrap(), &[]).unwrap_err();
    assert!(matches!(e, HfError::NotAModel { .. }), "{e}");
    let e = resolve_model_path_in(plain.join("notes.txt").to_str().unwrap(), &[]).unwrap_err();
    assert!(matches!(e, HfError::NotAModel { .. }), "{e}");
}

#[cfg(unix)]
#[test]
fn cached_snapshot_opens_through_symlinks() {
    let root = tempfile::tempdir().unwrap();
    let repo = fake_cache(root.path());
    let env = |k: &str| match k {
        "HF_HUB_CACHE" => Some(root.path().as_os_str().to_owned()),
        "HOME" => Some("/nonexistent-home".into()),
        _ => None,
    };
    let roots = cache_roots_from_env(env);
    assert_eq!(
        roots,
        [
            root.path().to_path_buf(),
            PathBuf::from("/nonexistent-home/.cache/huggingface/hub")
        ]
    );
    let dir = resolve_model_path_in("acme/tiny-moe", &roots).unwrap();
    assert!(std::fs::symlink_metadata(dir.join("config.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let folder = HfFolder::open(&dir).unwrap();
    assert_eq!(folder.config_json()["model_type"], "deepseek_v3");
    assert!(folder.has_weights());
    let weights = folder.open_weights().unwrap();
    let direct =
        frugal_formats::safetensors::SafetensorsModel::open_dir(st_fixtures().join("sharded"))
            .unwrap();
    assert_eq!(weights.tensor_infos(), direct.tensor_infos());
    for info in direct.tensor_infos() {
        assert_eq!(
            weights.tensor(&info.name).unwrap().data,
            direct.tensor(&info.name).unwrap().data
        );
    }
    drop(repo);
}

#[test]
fn env_roots_order() {
    let env = |k: &str| match k {
        "HF_HUB_CACHE" => Some("/a".into()),
        "HF_HOME" => Some("/b".into()),
        "HOME" => Some("/c".into()),
        _ => None,
    };
    assert_eq!(
        cache_roots_from_env(env),
        [
            PathBuf::from("/a"),
            PathBuf::from("/b/hub"),
            PathBuf::from("/c/.cache/huggingface/hub")
        ]
    );
    assert_eq!(cache_roots_from_env(|_| None), Vec::<PathBuf>::new());
}
