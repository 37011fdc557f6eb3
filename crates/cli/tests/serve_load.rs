//! Load test of `frugal serve` on the `deepseek-v3` fixture: 16 concurrent streaming clients
//! send 200 chat requests in all over loopback, then one client sends requests alone. Every
//! request must finish with its full answer (zero errors); the aggregate tokens/s of both runs
//! (the batching gain) and the server's peak memory are printed, not asserted (no timing
//! assertions in tests; run with `--nocapture` to see them).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod serve_support;
use serve_support::*;

const MAX_TOKENS: usize = 16;

/// One streamed chat request; returns the number of content/reasoning chunks received and
/// whether it ended properly (a finish_reason, then `[DONE]`).
fn stream_one(addr: std::net::SocketAddr, i: usize) -> Result<usize, String> {
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"Request {i}: tell me about mixtures of experts."}}],"stream":true,"max_tokens":{MAX_TOKENS},"temperature":0.8,"seed":{i},"stream_options":{{"include_usage":true}}}}"#
    );
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.contains(" 200 ") {
        return Err(format!("status line {line:?}"));
    }
    let (mut completion_tokens, mut finished, mut done) = (None, false, false);
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if v.get("error").is_some() {
            return Err(data.to_owned());
        }
        if v["choices"][0]["finish_reason"].is_string() {
            finished = true;
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            completion_tokens = Some(n as usize);
        }
    }
    match (finished, done, completion_tokens) {
        (true, true, Some(n)) if n >= 1 => Ok(n),
        other => Err(format!("incomplete stream: {other:?}")),
    }
}

/// Runs `total` requests over `clients` threads; returns (tokens, seconds, errors).
fn run(addr: std::net::SocketAddr, clients: usize, total: usize) -> (usize, f64, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let (mut tokens, mut errors) = (0, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    match stream_one(addr, i) {
                        Ok(n) => tokens += n,
                        Err(e) => errors.push(format!("request {i}: {e}")),
                    }
                }
                (tokens, errors)
            })
        })
        .collect();
    let (mut tokens, mut errors) = (0, Vec::new());
    for h in handles {
        let (t, e) = h.join().unwrap();
        tokens += t;
        errors.extend(e);
    }
    (tokens, started.elapsed().as_secs_f64(), errors)
}

#[test]
fn sixteen_streaming_clients_200_requests() {
    let server = Server::start(&["--parallel", "16", "--ctx-size", "512"]);
    let (tokens, secs, errors) = run(server.addr, 16, 200);
    assert!(errors.is_empty(), "{} errors: {errors:#?}", errors.len());
    assert!(tokens >= 200, "{tokens} tokens");
    let (single_tokens, single_secs, single_errors) = run(server.addr, 1, 20);
    assert!(single_errors.is_empty(), "{single_errors:#?}");
    let batched = tokens as f64 / secs;
    let single = single_tokens as f64 / single_secs;
    let passes = server.metric("frugal_forward_passes_total");
    let generated = server.metric("frugal_generated_tokens_total");
    println!("load test (deepseek-v3 fixture, max_tokens {MAX_TOKENS}, loopback):");
    println!("  16 clients: 200 requests, {tokens} tokens in {secs:.2} s = {batched:.0} tokens/s, 0 errors");
    println!("  1 client:   20 requests, {single_tokens} tokens in {single_secs:.2} s = {single:.0} tokens/s");
    println!("  batching gain: {:.2}x", batched / single);
    println!(
        "  forward passes: {passes} for {generated} generated tokens ({:.1} tokens per pass)",
        generated / passes.max(1.0)
    );
    match server.peak_rss_kib() {
        Some(kib) => println!(
            "  server peak memory (VmHWM): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("  server peak memory: unavailable (no /proc)"),
    }
}
