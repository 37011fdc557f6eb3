//! `frugal pull` against a fake hub on 127.0.0.1 (never the real network): the cache layout
//! huggingface_hub writes (blobs, relative snapshot symlinks, refs/main), `frugal inspect` on
//! the pulled id, `:FILE` globs, resuming a dropped download with `Range`, and the one-line
//! errors for 401/404/network failures.
//!
//! The fake speaks the hub's documented interface: `GET /api/models/{repo}/revision/{rev}`
//! (JSON `sha` + `siblings[].rfilename`), `HEAD /{repo}/resolve/{rev}/{file}` answering 200 +
//! `ETag` for small files and 302 + `X-Linked-Etag`/`X-Linked-Size` to a CDN path for LFS
//! files, `X-Error-Code` on errors.

#![cfg(feature = "pull")]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use frugal_testdata::reference_dir;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const CONFIG_ETAG: &str = "1111111111111111111111111111111111111111";
/// LFS files: (name, etag (a sha256 on the real hub), contents).
fn lfs_files() -> Vec<(&'static str, String, Vec<u8>)> {
    vec![
        ("model.safetensors", "a".repeat(64), safetensors_bytes()),
        (
            "model-Q4_K_M.gguf",
            "b".repeat(64),
            b"GGUF q4 bytes".to_vec(),
        ),
        ("model-Q8_0.gguf", "c".repeat(64), b"GGUF q8 bytes".to_vec()),
        (
            "Q4_K_M/part-Q4_K_M-00001-of-00002.gguf",
            "d".repeat(64),
            b"split q4".to_vec(),
        ),
    ]
}

/// A valid safetensors file: one F32 tensor of 1024 values (4 KiB to cut in half).
fn safetensors_bytes() -> Vec<u8> {
    let header = br#"{"x":{"dtype":"F32","shape":[1024],"data_offsets":[0,4096]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend((0..4096u32).map(|i| (i * 7 % 251) as u8));
    out
}

fn config_bytes() -> Vec<u8> {
    let path = reference_dir().join("configs/Qwen__Qwen3-30B-A3B/config.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fake hub: serves `acme/tiny`, refuses `acme/gated` without `Bearer secret`, knows no
/// other repository. Logs `METHOD PATH [RANGE]` per request.
struct FakeHub {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    /// When set, the next CDN download sends half its body and hangs up.
    drop_next: Arc<AtomicBool>,
}

impl FakeHub {
    fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let drop_next = Arc::new(AtomicBool::new(false));
        let (l, d) = (log.clone(), drop_next.clone());
        // Read here, so a missing reference set fails the test, not a server thread.
        let config = Arc::new(config_bytes());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (l, d, c) = (l.clone(), d.clone(), config.clone());
                std::thread::spawn(move || serve(stream, &l, &d, &c));
            }
        });
        FakeHub {
            url,
            log,
            drop_next,
        }
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<String>>, drop_next: &AtomicBool, config: &[u8]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "range" => range = Some(v.trim().to_string()),
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    log.lock().unwrap().push(format!(
        "{method} {path} {}",
        range.clone().unwrap_or_default()
    ));
    let mut out = stream;
    let head = method == "HEAD";
    let respond = |out: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        let _ = out.write_all(r.as_bytes());
        if !head {
            let _ = out.write_all(body);
        }
    };
    let error = |out: &mut TcpStream, status: &str, code: &str| {
        respond(
            out,
            status,
            &[("X-Error-Code", code.to_string())],
            b"{\"error\":\"no\"}",
        )
    };
    let authorized = auth.as_deref() == Some("Bearer secret");
    let files = lfs_files();
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let repo = rest.split("/revision/").next().unwrap_or("");
        match repo {
            "acme/tiny" => {}
            "acme/gated" if authorized => {}
            "acme/gated" => return error(&mut out, "401 Unauthorized", "GatedRepo"),
            _ => return error(&mut out, "404 Not Found", "RepositoryNotFound"),
        }
        let mut names = vec!["config.json", "README.md"];
        names.extend(files.iter().map(|f| f.0));
        let siblings: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"rfilename": n}))
            .collect();
        let body = serde_json::json!({"id": repo, "sha": COMMIT, "siblings": siblings});
        return respond(&mut out, "200 OK", &[], body.to_string().as_bytes());
    }
    for repo in ["acme/tiny", "acme/gated"] {
        let Some(file) = path.strip_prefix(&format!("/{repo}/resolve/{COMMIT}/")) else {
            continue;
        };
        if repo == "acme/gated" && !authorized {
            return error(&mut out, "401 Unauthorized", "GatedRepo");
        }
        let commit = ("X-Repo-Commit", COMMIT.to_string());
        if file == "config.json" {
            let etag = ("ETag", format!("\"{CONFIG_ETAG}\""));
            return respond(&mut out, "200 OK", &[commit, etag], config);
        }
        if let Some((_, etag, data)) = files.iter().find(|f| f.0 == file) {
            let headers = [
                commit,
                ("X-Linked-Etag", format!("\"{etag}\"")),
                ("X-Linked-Size", data.len().to_string()),
                ("Location", format!("/cdn/{etag}")),
            ];
            return respond(&mut out, "302 Found", &headers, b"");
        }
        return error(&mut out, "404 Not Found", "EntryNotFound");
    }
    if let Some(etag) = path.strip_prefix("/cdn/") {
        let Some((_, _, data)) = files.iter().find(|f| f.1 == etag) else {
            return error(&mut out, "404 Not Found", "EntryNotFound");
        };
        let from: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let (status, body) = if from > 0 {
            ("206 Partial Content", &data[from..])
        } else {
            ("200 OK", &data[..])
        };
        if drop_next.swap(false, Ordering::SeqCst) {
            // Promise the whole body, send half, hang up.
            let r = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(r.as_bytes());
            let _ = out.write_all(&body[..body.len() / 2]);
            let _ = out.flush();
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        return respond(&mut out, status, &[], body);
    }
    error(&mut out, "404 Not Found", "")
}

fn frugal(args: &[&str], endpoint: &str, cache: &Path, token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frugal"));
    cmd.args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cache.join("no-home"))
        .env_remove("HF_TOKEN");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().expect("running frugal")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn snapshot(cache: &Path, repo: &str) -> PathBuf {
    cache
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(COMMIT)
}

/// The file is a relative symlink to `expect_target` whose contents are `data`.
fn assert_linked(path: &Path, expect_target: &str, data: &[u8]) {
    #[cfg(unix)]
    {
        let target = std::fs::read_link(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(target, Path::new(expect_target), "{}", path.display());
    }
    let _ = expect_target;
    assert_eq!(std::fs::read(path).unwrap(), data, "{}", path.display());
}

#[test]
fn pulls_the_model_files_into_the_hub_layout_and_inspect_finds_them() {
    let hub = FakeHub::start();
    let cache = tempfile::tempdir().unwrap();
    let out = frugal(&["pull", "acme/tiny"], &hub.url, cache.path(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap = snapshot(cache.path(), "acme/tiny");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        snap.to_str().unwrap()
    );

    let repo = cache.path().join("models--acme--tiny");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let mut blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    blobs.sort();
    assert_eq!(blobs, [CONFIG_ETAG.to_string(), "a".repeat(64)]);
    assert_linked(
        &snap.join("config.json"),
        &format!("../../blobs/{CONFIG_ETAG}"),
        &config_bytes(),
    );
    assert_linked(
        &snap.join("model.safetensors"),
        &format!("../../blobs/{}", "a".repeat(64)),
        &safetensors_bytes(),
    );
    let mut names: Vec<_> = std::fs::read_dir(&snap)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "model.safetensors"],
        "README and GGUFs are not model files"
    );

    // `frugal inspect ORG/NAME` reads the pulled snapshot: same counts as the reference folder.
    let pulled = frugal(
        &["inspect", "acme/tiny", "--json"],
        &hub.url,
        cache.path(),
        None,
    );
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let folder = reference_dir().join("configs/Qwen__Qwen3-30B-A3B");
    let direct = frugal(
        &["inspect", folder.to_str().unwrap(), "--json"],
        &hub.url,
        cache.path(),
        None,
    );
    assert!(direct.status.success(), "{}", stderr(&direct));
    let j = |o: &Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).unwrap() };
    assert_eq!(j(&pulled)["params_total"], j(&direct)["params_total"]);
    assert!(j(&pulled)["params_total"].as_u64().unwrap() > 0);

    // A second pull asks for metadata only: no file body is fetched again.
    hub.take_log();
    let again = frugal(&["pull", "acme/tiny"], &hub.url, cache.path(), None);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("0 file(s) downloaded"),
        "{}",
        stderr(&again)
    );
    let log = hub.take_log();
    assert!(
        log.iter()
            .all(|l| !l.contains("/cdn/") && !l.starts_with("GET /acme")),
        "{log:?}"
    );
}

#[test]
fn file_selection_by_name_and_glob() {
    let hub = FakeHub::start();
    let cache = tempfile::tempdir().unwrap();
    let out = frugal(
        &["pull", "acme/tiny:*Q4_K_M*.gguf"],
        &hub.url,
        cache.path(),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let snap = snapshot(cache.path(), "acme/tiny");
    assert_linked(
        &snap.join("model-Q4_K_M.gguf"),
        &format!("../../blobs/{}", "b".repeat(64)),
        b"GGUF q4 bytes",
    );
    // One folder deeper, one more `..`.
    assert_linked(
        &snap.join("Q4_K_M/part-Q4_K_M-00001-of-00002.gguf"),
        &format!("../../../blobs/{}", "d".repeat(64)),
        b"split q4",
    );
    assert!(!snap.join("model-Q8_0.gguf").exists() && !snap.join("config.json").exists());

    let out = frugal(
        &["pull", "acme/tiny:model-Q8_0.gguf"],
        &hub.url,
        cache.path(),
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(snap.join("model-Q8_0.gguf")).unwrap(),
        b"GGUF q8 bytes"
    );

    let out = frugal(
        &["pull", "acme/tiny:nothere.gguf"],
        &hub.url,
        cache.path(),
        None,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no file matches `nothere.gguf`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_dropped_download_resumes_with_range_and_ends_byte_identical() {
    let hub = FakeHub::start();
    let cache = tempfile::tempdir().unwrap();
    let data = safetensors_bytes();
    let etag = "a".repeat(64);
    let blobs = cache.path().join("models--acme--tiny/blobs");

    hub.drop_next.store(true, Ordering::SeqCst);
    let first = frugal(&["pull", "acme/tiny"], &hub.url, cache.path(), None);
    assert!(
        !first.status.success(),
        "the dropped connection must fail the pull"
    );
    let err = stderr(&first);
    assert!(
        err.contains("network failure") && err.contains("resume"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let partial = blobs.join(format!("{etag}.incomplete"));
    let half = std::fs::metadata(&partial)
        .expect("a partial blob is kept")
        .len();
    assert_eq!(half, data.len() as u64 / 2);
    assert!(!blobs.join(&etag).exists());

    hub.take_log();
    let second = frugal(&["pull", "acme/tiny"], &hub.url, cache.path(), None);
    assert!(second.status.success(), "{}", stderr(&second));
    let log = hub.take_log();
    let range = format!("GET /cdn/{etag} bytes={half}-");
    assert!(log.iter().any(|l| l.trim() == range), "{log:?}");
    assert_eq!(std::fs::read(blobs.join(&etag)).unwrap(), data);
    assert!(!partial.exists());
}

#[test]
fn errors_are_one_clear_line() {
    let hub = FakeHub::start();
    let cache = tempfile::tempdir().unwrap();
    let one_line = |o: &Output| {
        let e = stderr(o);
        assert!(!o.status.success());
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        e
    };

    let e = one_line(&frugal(
        &["pull", "acme/gated"],
        &hub.url,
        cache.path(),
        None,
    ));
    assert!(
        e.contains("401") && e.contains("HF_TOKEN") && e.contains("gated"),
        "{e}"
    );
    // With the token, the gated repository downloads.
    let ok = frugal(
        &["pull", "acme/gated"],
        &hub.url,
        cache.path(),
        Some("secret"),
    );
    assert!(ok.status.success(), "{}", stderr(&ok));

    let e = one_line(&frugal(
        &["pull", "acme/missing"],
        &hub.url,
        cache.path(),
        None,
    ));
    assert!(
        e.contains("404") && e.contains("not found") && e.contains("acme/missing"),
        "{e}"
    );

    let e = one_line(&frugal(
        &["pull", "not-a-repo"],
        &hub.url,
        cache.path(),
        None,
    ));
    assert!(e.contains("expected ORG/NAME"), "{e}");

    // Nothing listens on a port just released.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = one_line(&frugal(&["pull", "acme/tiny"], &closed, cache.path(), None));
    assert!(e.contains("network failure"), "{e}");
}
