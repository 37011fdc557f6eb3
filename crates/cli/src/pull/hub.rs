//! The Hugging Face hub's HTTP interface, as much of it as a download needs.
//!
//! Facts used (huggingface_hub's `file_download.py` / `hf_api.py` and the hub API docs):
//! - `GET {endpoint}/api/models/{repo}/revision/{rev}` answers JSON with `sha` (the commit) and
//!   `siblings[].rfilename` (every file of the repository at that commit).
//! - `HEAD {endpoint}/{repo}/resolve/{rev}/{file}` with redirects off answers `X-Repo-Commit`,
//!   `X-Linked-Etag` + `X-Linked-Size` for LFS files (the etag is the file's sha256; the
//!   answer is a 302 to a CDN) or `ETag` + `Content-Length` for small git files (the etag is
//!   the git blob id). A relative `Location` (renamed repository) is followed; an absolute one
//!   is where the bytes are fetched from.
//! - Errors carry `X-Error-Code` (`RepositoryNotFound`, `GatedRepo`, `EntryNotFound`,
//!   `RevisionNotFound`) and `X-Error-Message`; a missing repository answers 401 to anonymous
//!   callers, so the code decides between "not found" and "needs a token".
//! - `Authorization: Bearer TOKEN` with the token from `HF_TOKEN`, else the file
//!   `$HF_HOME/token` (`HF_HOME` defaults to `~/.cache/huggingface`). It is sent only to the
//!   endpoint's own host, never to the CDN a download is redirected to.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ureq::http::{HeaderMap, StatusCode};

/// The public hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A repository's file list at one commit.
#[derive(Debug)]
pub struct RepoInfo {
    /// The commit the revision resolved to.
    pub commit: String,
    /// Every file, by its path in the repository.
    pub files: Vec<String>,
}

/// What a `HEAD` on a file's `resolve` URL tells.
#[derive(Debug)]
pub struct FileMeta {
    /// The blob name in the cache: the etag without quotes or `W/`.
    pub etag: String,
    /// The file's size in bytes, when the hub says.
    pub size: Option<u64>,
    /// Where to `GET` the bytes.
    pub url: String,
}

/// A client for one hub endpoint.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    /// Does not follow redirects: metadata lives on the first answer.
    meta: ureq::Agent,
    /// Follows redirects (to the CDN).
    data: ureq::Agent,
}

impl Hub {
    /// A client for `HF_ENDPOINT` (else the public hub) with the token from the environment.
    pub fn from_env() -> Hub {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        Hub::new(endpoint.trim_end_matches('/').to_string(), token_from_env())
    }

    fn new(endpoint: String, token: Option<String>) -> Hub {
        let agent = |redirects: u32| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .max_redirects_will_error(false)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(120)))
                .user_agent(concat!("frugal/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Hub {
            endpoint,
            token,
            meta: agent(0),
            data: agent(10),
        }
    }

    /// `ORG/NAME` at `revision`: its commit and file list.
    pub fn repo_info(&self, repo: &str, revision: &str) -> anyhow::Result<RepoInfo> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            encode(revision, false)
        );
        let mut resp = self
            .request(false, &url)
            .call()
            .map_err(|e| network(&url, e))?;
        check_status(resp.status(), resp.headers(), repo, None)?;
        // Bounded: a file list is a few hundred KB even for the largest repositories.
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| network(&url, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{url}: the hub's answer is not the expected JSON"))?;
        let commit = json["sha"]
            .as_str()
            .with_context(|| format!("{url}: the answer has no `sha` (commit)"))?
            .to_string();
        let files = json["siblings"]
            .as_array()
            .with_context(|| format!("{url}: the answer has no `siblings` (file list)"))?
            .iter()
            .filter_map(|s| s["rfilename"].as_str().map(str::to_string))
            .collect();
        Ok(RepoInfo { commit, files })
    }

    /// `HEAD` of `file` at `commit`: its etag, size and download URL.
    pub fn file_meta(&self, repo: &str, commit: &str, file: &str) -> anyhow::Result<FileMeta> {
        let mut url = format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            encode(commit, false),
            encode(file, true)
        );
        // Relative redirects (a renamed repository) are followed here, a few at most.
        for _ in 0..5 {
            let resp = self
                .request(true, &url)
                .header("Accept-Encoding", "identity")
                .call()
                .map_err(|e| network(&url, e))?;
            let headers = resp.headers();
            let status = resp.status();
            let location = header(headers, "location");
            if status.is_redirection() {
                let location = location.with_context(|| {
                    format!("{url}: redirect ({status}) without a Location header")
                })?;
                let linked = header(headers, "x-linked-etag");
                if location.starts_with('/') && linked.is_none() {
                    url = format!("{}{location}", self.origin());
                    continue;
                }
                let etag = linked
                    .or_else(|| header(headers, "etag"))
                    .with_context(|| format!("{url}: the hub sent no ETag for {file}"))?;
                let size = header(headers, "x-linked-size").and_then(|s| s.parse().ok());
                let url = if location.starts_with('/') {
                    format!("{}{location}", self.origin())
                } else {
                    location
                };
                return Ok(FileMeta {
                    etag: clean_etag(&etag),
                    size,
                    url,
                });
            }
            check_status(status, headers, repo, Some(file))?;
            let etag = header(headers, "x-linked-etag")
                .or_else(|| header(headers, "etag"))
                .with_context(|| format!("{url}: the hub sent no ETag for {file}"))?;
            let size = header(headers, "x-linked-size")
                .or_else(|| header(headers, "content-length"))
                .and_then(|s| s.parse().ok());
            return Ok(FileMeta {
                etag: clean_etag(&etag),
                size,
                url,
            });
        }
        bail!("{url}: too many redirects")
    }

    /// Downloads `meta.url` into `partial`, continuing from its current length with a
    /// `Range` request; `on_bytes` is told of every chunk written.
    pub fn download(
        &self,
        repo: &str,
        file: &str,
        meta: &FileMeta,
        partial: &Path,
        mut on_bytes: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        let mut req = self.request(false, &meta.url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| network(&meta.url, e))?;
        let status = resp.status();
        let append = match status {
            StatusCode::PARTIAL_CONTENT => true,
            StatusCode::OK => false,
            // The partial file is already whole (or longer): start over.
            StatusCode::RANGE_NOT_SATISFIABLE => {
                std::fs::remove_file(partial).ok();
                return self.download(repo, file, meta, partial, on_bytes);
            }
            _ => {
                check_status(status, resp.headers(), repo, Some(file))?;
                bail!("{}: unexpected answer {status}", meta.url)
            }
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(partial)
            .with_context(|| format!("opening {}", partial.display()))?;
        if append {
            on_bytes(have);
        }
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.flush().ok();
                    bail!(
                        "network failure downloading {file} from {}: {e} \
                         (run the same command again to resume)",
                        meta.url
                    )
                }
            };
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", partial.display()))?;
            on_bytes(n as u64);
        }
        out.sync_all()
            .with_context(|| format!("writing {}", partial.display()))?;
        Ok(())
    }

    /// `scheme://host[:port]` of the endpoint.
    fn origin(&self) -> &str {
        let after_scheme = self.endpoint.find("://").map_or(0, |i| i + 3);
        match self.endpoint[after_scheme..].find('/') {
            Some(i) => &self.endpoint[..after_scheme + i],
            None => &self.endpoint,
        }
    }

    /// A `HEAD` (on the agent that does not follow redirects) or a `GET`, with the token when
    /// `url` is on the hub itself.
    fn request(&self, head: bool, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut req = if head {
            self.meta.head(url)
        } else {
            self.data.get(url)
        };
        // The token goes to the hub only, never to the CDN a file is redirected to.
        let own_host = url == self.origin() || url.starts_with(&format!("{}/", self.origin()));
        if let (Some(token), true) = (&self.token, own_host) {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req
    }
}

/// The token from `HF_TOKEN`, else the file `$HF_HOME/token` (`~/.cache/huggingface/token`).
fn token_from_env() -> Option<String> {
    if let Some(t) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Some(t.trim().to_string());
    }
    let home = std::env::var_os("HF_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
        })?;
    let t = std::fs::read_to_string(home.join("token")).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `W/"abc"` → `abc`.
fn clean_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// One clear line for an HTTP error status.
fn check_status(
    status: StatusCode,
    headers: &HeaderMap,
    repo: &str,
    file: Option<&str>,
) -> anyhow::Result<()> {
    if status.is_success() {
        return Ok(());
    }
    let code = header(headers, "x-error-code").unwrap_or_default();
    let what = match file {
        Some(f) => format!("{repo}:{f}"),
        None => repo.to_string(),
    };
    match (status.as_u16(), code.as_str()) {
        (_, "RepositoryNotFound") => bail!(
            "{repo}: repository not found on the hub ({status}); check the name, or set HF_TOKEN if it is private"
        ),
        (_, "RevisionNotFound") => bail!("{repo}: revision not found ({status})"),
        (_, "EntryNotFound") | (404, _) if file.is_some() => {
            bail!("{what}: file not found in the repository ({status})")
        }
        (404, _) => bail!("{repo}: repository not found on the hub ({status})"),
        (401 | 403, _) => bail!(
            "{what}: access denied ({status}): the repository is gated or private; \
             set HF_TOKEN to a token that has access (and accept its terms on the hub)"
        ),
        _ => bail!("{what}: the hub answered {status}"),
    }
}

fn network(url: &str, e: ureq::Error) -> anyhow::Error {
    anyhow::anyhow!("network failure reaching {url}: {e}")
}

/// Percent-encodes a path (`keep_slash`: file paths keep their folders) for a URL.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_urls() {
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert_eq!(clean_etag("\"def\""), "def");
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("a b/c+d.gguf", true), "a%20b/c%2Bd.gguf");
        let hub = Hub::new("http://127.0.0.1:9/prefix".into(), None);
        assert_eq!(hub.origin(), "http://127.0.0.1:9");
    }
}
