//! Starting `frugal serve` on the fixture model and talking raw HTTP/1.1 to it.
#![allow(dead_code)] // Each test crate uses a different subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `deepseek-v3` fixture folder (the embedded default model's files).
pub fn fixture() -> std::path::PathBuf {
    frugal_testdata::fixtures_dir()
        .join("models")
        .join("deepseek-v3")
}

/// A running `frugal serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    _cache: tempfile::TempDir,
}

impl Server {
    /// Starts `frugal serve --model FIXTURE --port 0 EXTRA…` and waits for its address line.
    pub fn start(extra: &[&str]) -> Server {
        let cache = tempfile::tempdir().unwrap();
        let model = fixture();
        let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
            .arg("serve")
            .arg("--model")
            .arg(&model)
            .args(["--port", "0", "--threads", "1"])
            .args(extra)
            .env("XDG_CACHE_HOME", cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting frugal serve");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            _cache: cache,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends raw bytes and reads the whole response (the connection is closed after it).
    pub fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // Write while reading, as real clients do: the server may answer (413) and close before
        // the whole body is sent, and a write error then is expected.
        let mut w = s.try_clone().unwrap();
        let request = request.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&request);
        });
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let _ = writer.join();
        parse_response(&buf)
    }

    /// `METHOD path` with a body and extra header lines.
    pub fn request(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.raw(&req)
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.request("POST", path, "", body.as_bytes())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "", b"")
    }

    /// A metric's value from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// Peak resident memory of the server process (Linux `VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and body (de-chunked) of a raw HTTP/1.1 response.
pub fn parse_response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The `data:` payloads of an SSE body.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}
