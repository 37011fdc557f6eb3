//! `frugal serve` end to end on the `deepseek-v3` fixture:
//! - the official `openai` Python client (`crates/server/tests/python/openai_client.py`, with
//!   transformers' greedy continuation as the expected output), when `FRUGAL_TEST_PYTHON`
//!   names a Python with `openai` installed (`.ci/run` sets it up);
//! - malformed requests over raw HTTP: each gets an OpenAI-style error with the right status,
//!   and the server keeps serving;
//! - a client that disconnects frees its slot; a full queue answers 429;
//! - the chat page in headless Chromium sends a message and shows the streamed answer.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod serve_support;
use serve_support::*;

/// Whether `body` is an OpenAI error object.
fn is_error_json(body: &str) -> bool {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return false,
    };
    v["error"]["message"].is_string() && v["error"]["type"].is_string()
}

#[test]
fn openai_python_client() {
    let Some(python) = std::env::var_os("FRUGAL_TEST_PYTHON") else {
        eprintln!(
            "\n*** SKIPPED openai_python_client: FRUGAL_TEST_PYTHON is not set. .ci/run sets it to \
             a venv with crates/server/tests/python/requirements.txt; locally: \
             FRUGAL_TEST_PYTHON=/path/to/venv/bin/python cargo test -p frugal-cli --test serve ***\n"
        );
        return;
    };
    let server = Server::start(&[
        "--max-body",
        "65536",
        "--ctx-size",
        "256",
        "--parallel",
        "4",
    ]);
    let keyed = Server::start(&["--api-key", "sk-test"]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/python/openai_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("{}/v1", server.url()))
        .arg(fixture())
        .arg(format!("{}/v1", keyed.url()))
        .output()
        .expect("running python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "openai client checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_requests_get_openai_errors() {
    let server = Server::start(&["--max-body", "65536", "--ctx-size", "256"]);
    let chat = "/v1/chat/completions";
    let ok_msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(&str, String, u16)> = vec![
        (chat, "{".into(), 400),
        (chat, "not json at all".into(), 400),
        (chat, "[]".into(), 400),
        (chat, "{}".into(), 400),
        (chat, r#"{"messages":"hi"}"#.into(), 400),
        (chat, r#"{"messages":[]}"#.into(), 400),
        (chat, r#"{"messages":[{"content":"hi"}]}"#.into(), 400),
        (
            chat,
            r#"{"messages":[{"role":"user","content":5}]}"#.into(),
            400,
        ),
        (chat, r#"{"messages":[42]}"#.into(), 400),
        (chat, format!(r#"{{{ok_msgs},"max_tokens":-1}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"max_tokens":0}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"max_tokens":1e9}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"max_tokens":100000}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"n":0}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"temperature":-1}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"temperature":"hot"}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"top_p":0}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"stream":"yes"}}"#), 400),
        (
            chat,
            format!(r#"{{{ok_msgs},"stop":["a","b","c","d","e"]}}"#),
            400,
        ),
        (chat, format!(r#"{{{ok_msgs},"stop":[""]}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"stop":5}}"#), 400),
        (
            chat,
            format!(r#"{{{ok_msgs},"logprobs":true,"top_logprobs":50}}"#),
            400,
        ),
        (
            chat,
            format!(r#"{{{ok_msgs},"response_format":{{"type":"json_schema"}}}}"#),
            400,
        ),
        (chat, format!(r#"{{{ok_msgs},"seed":"x"}}"#), 400),
        (chat, format!(r#"{{{ok_msgs},"tools":"x"}}"#), 400),
        (
            chat,
            format!(r#"{{{ok_msgs},"stream_options":{{"include_usage":3}}}}"#),
            400,
        ),
        (chat, "[".repeat(10_000), 400),
        (
            chat,
            format!(
                r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
                "word ".repeat(2000)
            ),
            400,
        ),
        (
            chat,
            format!(
                r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(70_000)
            ),
            413,
        ),
        ("/v1/completions", r#"{"prompt":5}"#.into(), 400),
        ("/v1/completions", r#"{"prompt":[1,2,999999]}"#.into(), 400),
        ("/v1/completions", r#"{"prompt":[]}"#.into(), 400),
        (
            "/v1/completions",
            r#"{"prompt":"hi","logprobs":9}"#.into(),
            400,
        ),
        ("/v1/nothing", "{}".into(), 404),
    ];
    for (path, body, want) in &cases {
        let (status, resp) = server.post(path, body);
        let shown: String = body.chars().take(80).collect();
        assert_eq!(status, *want, "{path} {shown}: {resp}");
        assert!(
            is_error_json(&resp),
            "{path} {shown}: not an OpenAI error: {resp}"
        );
    }
    // Invalid UTF-8 inside a JSON string.
    let (status, resp) = server.request(
        "POST",
        chat,
        "",
        b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}",
    );
    assert_eq!(status, 400, "{resp}");
    assert!(is_error_json(&resp), "{resp}");
    // A Content-Length over the limit is refused before the body is read.
    let (status, resp) = server.raw(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000000\r\n\r\n{",
    );
    assert_eq!(status, 413, "{resp}");
    assert!(is_error_json(&resp), "{resp}");
    // On a keep-alive connection the 413 says the connection closes (its body is unread),
    // and it does close: a client must not send its next request there.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{",
        )
        .unwrap();
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(read.is_ok(), "the server kept the connection open: {text}");
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        assert!(head.starts_with("http/1.1 413"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
    }
    // A chunked body over the limit too.
    let mut req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(format!("1000\r\n{}\r\n", "a".repeat(0x1000)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, resp) = server.raw(&req);
    assert_eq!(status, 413, "{resp}");
    // Wrong method.
    let (status, resp) = server.get(chat);
    assert_eq!(status, 405, "{resp}");
    assert!(is_error_json(&resp), "{resp}");
    // Not HTTP at all.
    let (status, _) = server.raw(b"GARBAGE\r\n\r\n");
    assert_eq!(status, 400);

    // Still serving, and a valid request works.
    assert_eq!(server.get("/health").0, 200);
    let (status, resp) = server.post(chat, &format!(r#"{{{ok_msgs},"max_tokens":3}}"#));
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["object"], "chat.completion");

    // A tool conversation as OpenAI clients send it: tools, an assistant turn of only calls
    // (content null), the tool's result. The template renders it; the answer comes back.
    let tool_chat = r#"{"messages":[{"role":"user","content":"Weather in Paris?"},
        {"role":"assistant","content":null,"tool_calls":[{"id":"call_0","type":"function",
         "function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
        {"role":"tool","tool_call_id":"call_0","content":"18C"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],
        "max_tokens":3}"#;
    let (status, resp) = server.post(chat, tool_chat);
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 20, "{resp}");
}

#[test]
fn api_key_is_required_when_set() {
    let server = Server::start(&["--api-key", "sk-test"]);
    for headers in [
        "",
        "Authorization: Bearer sk-nope\r\n",
        "Authorization: sk-test\r\n",
    ] {
        let (status, resp) = server.request("GET", "/v1/models", headers, b"");
        assert_eq!(status, 401, "{headers:?}: {resp}");
        assert!(is_error_json(&resp), "{resp}");
    }
    let (status, _) = server.request(
        "GET",
        "/v1/models",
        "Authorization: Bearer sk-test\r\n",
        b"",
    );
    assert_eq!(status, 200);
    // The page and the health check stay open.
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.get("/").0, 200);
}

/// Opens a streamed chat request and returns the socket after its first event arrived.
fn open_stream(server: &Server, max_tokens: usize) -> (BufReader<TcpStream>, u16) {
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"hi"}}],"stream":true,"max_tokens":{max_tokens},"ignore_eos":true}}"#
    );
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    if status == 200 {
        // Headers, then the first event.
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("data: ") {
                break;
            }
        }
    }
    (r, status)
}

#[test]
fn disconnect_frees_the_slot_and_full_queue_is_429() {
    // One slot and one place in the queue.
    let server = Server::start(&["--parallel", "1", "--max-queue", "1"]);
    // A long answer holds the slot; a second waits in the queue; a third is refused.
    let (a, status) = open_stream(&server, 3000);
    assert_eq!(status, 200);
    // The role chunk comes before admission: wait until it holds the slot.
    let mut tries = 0;
    while server.metric("frugal_requests_running") < 1.0
        || server.metric("frugal_queue_depth") > 0.0
    {
        tries += 1;
        assert!(tries < 500, "first request never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let body = r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let mut b = TcpStream::connect(server.addr).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        b,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Wait until it is queued.
    let mut tries = 0;
    while server.metric("frugal_queue_depth") < 1.0 {
        tries += 1;
        assert!(tries < 500, "second request never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, resp) = server.post("/v1/chat/completions", body);
    assert_eq!(status, 429, "{resp}");
    assert!(is_error_json(&resp), "{resp}");

    // The first client leaves: its slot goes to the queued request, which finishes long before
    // the 3000 tokens the first asked for would have.
    drop(a);
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut b, &mut buf).unwrap();
    let (status, resp) = parse_response(&buf);
    assert_eq!(status, 200, "{resp}");
    assert_eq!(server.metric("frugal_requests_cancelled_total"), 1.0);
    let generated = server.metric("frugal_generated_tokens_total");
    assert!(
        generated < 1000.0,
        "the cancelled request ran on: {generated} tokens"
    );
    // The gauges settle once the scheduler finishes its step.
    let mut tries = 0;
    while server.metric("frugal_requests_running") != 0.0 {
        tries += 1;
        assert!(tries < 500, "a sequence is still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A browser: Debian's `chromium` (or `FRUGAL_TEST_CHROMIUM`), headless.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FRUGAL_TEST_CHROMIUM") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// Undoes the entity escapes of serialized HTML text.
fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[test]
fn chat_page_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "\n*** SKIPPED chat_page_in_headless_chromium: no `chromium` on PATH and \
             FRUGAL_TEST_CHROMIUM is not set (.ci/run installs Debian's chromium) ***\n"
        );
        return;
    };
    let server = Server::start(&[]);
    // What the API answers for the same message, not streamed.
    let (status, resp) = server.post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hello"}],"temperature":0,"max_tokens":8}"#,
    );
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    let want_reasoning = v["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap();
    let want_content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!want_reasoning.is_empty());

    // The page sends `?q=` at load and streams the answer; --dump-dom prints the DOM once the
    // page is idle (virtual time runs out or nothing is pending). Chromium does not always count
    // a streamed response body as pending, so now and then it dumps the page mid-answer; the
    // server's answer is deterministic, so such a run is repeated (at most three runs).
    let run_page = || {
        let profile = tempfile::tempdir().unwrap();
        Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=30000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!(
                "{}/?q=hello&temperature=0&max_tokens=8",
                server.url()
            ))
            .output()
            .expect("running chromium")
    };
    let mut out = run_page();
    for _ in 1..3 {
        if String::from_utf8_lossy(&out.stdout).contains("<body data-done=\"1\">") {
            break;
        }
        out = run_page();
    }
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<body data-done=\"1\">"),
        "the page did not finish its answer:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dom.contains(r#"<div class="msg user">hello</div>"#),
        "{dom}"
    );
    let result = dom
        .split("<pre id=\"result\" hidden=\"\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("no result in {dom}"));
    let got: Value = serde_json::from_str(&unescape_html(result)).unwrap();
    assert_eq!(got["reasoning"], want_reasoning, "reasoning shown apart");
    assert_eq!(got["content"], want_content);
    // And it is on the page, in the reasoning box.
    assert!(dom.contains("<div class=\"reasoning\">"), "{dom}");
}
