//! `frugal chat` end to end: in a pipe, the first turn's answer must equal `frugal run`'s for
//! the same message (the first turn's prompt is the same rendering), a second turn must follow,
//! and `/reset` must bring back the first answer; on a pseudo-terminal (tmux) both answers and
//! the speed line must show on the screen.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn model() -> String {
    frugal_testdata::fixtures_dir()
        .join("models")
        .join("deepseek-v3")
        .to_str()
        .expect("OK because the fixture path is UTF-8")
        .to_owned()
}

const FLAGS: &[&str] = &["--temperature", "0", "--max-tokens", "12"];

fn run_prompt(prompt: &str, cache: &std::path::Path) -> String {
    let model = model();
    let mut args = vec!["run", "--model", &model, prompt];
    args.extend_from_slice(FLAGS);
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(&args)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("running frugal run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn chat_pipe(input: &str, cache: &std::path::Path) -> Output {
    chat_pipe_with(&model(), FLAGS, input, cache)
}

fn chat_pipe_with(model: &str, flags: &[&str], input: &str, cache: &std::path::Path) -> Output {
    let mut args = vec!["chat", "--model", model];
    args.extend_from_slice(flags);
    let mut child = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(&args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running frugal chat");
    child
        .stdin
        .take()
        .expect("OK because stdin is piped")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for frugal chat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn pipe_turns_match_run_and_reset() {
    let cache = tempfile::tempdir().expect("temp dir");
    let first = run_prompt("hi", cache.path());
    assert!(first.len() > 1, "run printed nothing: {first:?}");

    // One turn: exactly run's output.
    let one = chat_pipe("hi\n", cache.path());
    assert_eq!(String::from_utf8_lossy(&one.stdout), first);
    // Speed lines go to stderr in a pipe, one per answer.
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert_eq!(stderr.matches("tok/s]").count(), 1, "{stderr}");

    // Two turns: the first answer, then a second one.
    let two = chat_pipe("hi\nthere\n", cache.path());
    let two_out = String::from_utf8(two.stdout).expect("UTF-8");
    let second = two_out
        .strip_prefix(&first)
        .unwrap_or_else(|| panic!("first answer differs from run's: {two_out:?} vs {first:?}"));
    assert!(
        second.ends_with('\n') && second.len() > 1,
        "no second answer: {two_out:?}"
    );
    let stderr = String::from_utf8_lossy(&two.stderr);
    assert_eq!(stderr.matches("tok/s]").count(), 2, "{stderr}");

    // /reset forgets the first turn: the same message gets the first answer again.
    let reset = chat_pipe("hi\n/reset\nhi\n", cache.path());
    assert_eq!(
        String::from_utf8_lossy(&reset.stdout),
        format!("{first}{first}")
    );

    // /save writes the conversation as JSON messages; the system prompt comes first.
    let file = cache.path().join("chat.json");
    let save = chat_pipe(
        &format!(
            "/system Be brief.\nhi\n/save {}\n/exit\nnot read\n",
            file.display()
        ),
        cache.path(),
    );
    assert!(save.stdout.len() > 1, "no answer before /save");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("saved file")).expect("JSON");
    let roles: Vec<&str> = saved
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(saved[0]["content"], "Be brief.");
    assert_eq!(saved[1]["content"], "hi");
    // The answer's content only: the fixture's template opens `<think>`, and the random
    // weights never close it, so all of the printed text is reasoning, none of it content.
    let content = saved[2]["content"].as_str().expect("content");
    assert!(String::from_utf8_lossy(&save.stdout).contains(content));
}

/// The second turn fed through the cached first turn must equal a full prefill of the whole
/// conversation. The random fixture weights write byte noise that does not survive decoding
/// and re-encoding, so answers are one token long: that token is never fed, the cache holds
/// exactly the previous prompt, and the next prompt extends it (mixtral's template keeps the
/// history as written).
#[test]
fn cache_reuse_equals_full_prefill() {
    let cache = tempfile::tempdir().expect("temp dir");
    let model = frugal_testdata::fixtures_dir()
        .join("models")
        .join("mixtral");
    let model = model
        .to_str()
        .expect("OK because the fixture path is UTF-8");
    let input = "hi\nthere\nand more\n";
    let flags = ["--temperature", "0", "--max-tokens", "1"];
    let reuse = chat_pipe_with(model, &flags, input, cache.path());
    let mut no_reuse = flags.to_vec();
    no_reuse.push("--no-cache-reuse");
    let full = chat_pipe_with(model, &no_reuse, input, cache.path());
    let stderr = String::from_utf8_lossy(&reuse.stderr);
    assert!(
        stderr.contains("prompt tokens reused"),
        "the cache was never reused: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&full.stderr).contains("reused"));
    assert_eq!(stderr.matches("reused").count(), 2, "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&reuse.stdout),
        String::from_utf8_lossy(&full.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&reuse.stdout).lines().count(), 3);
}

/// tmux, which the pseudo-terminal test drives; CI must install it.
fn tmux() -> &'static str {
    let path = "/usr/bin/tmux";
    let found = Command::new(path)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{path} is missing: the chat terminal test needs tmux (apt-get install -y tmux)"
    );
    path
}

/// Kills the tmux session when the test ends, passed or failed.
struct Session<'a> {
    tmux: &'a str,
    socket: String,
    name: &'a str,
}

impl<'a> Session<'a> {
    /// Starts `command` in a detached `columns`×50 session on a private server socket in
    /// `dir` (the test touches no one else's tmux), and waits for the chat banner.
    fn start(
        tmux: &'a str,
        dir: &std::path::Path,
        name: &'a str,
        columns: u32,
        command: &str,
    ) -> Self {
        let session = Session {
            tmux,
            socket: dir.join("tmux.sock").display().to_string(),
            name,
        };
        let columns = columns.to_string();
        let out = session.cmd(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &columns,
            "-y",
            "50",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        session.wait_for("the banner", |s| s.contains("/help"));
        session
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(self.tmux)
            .args(["-S", &self.socket])
            .args(args)
            .output()
            .expect("running tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", self.name]).stdout)
            .into_owned()
    }

    /// Polls the screen until `done` holds, for at most a minute.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn terminal_chat_in_tmux() {
    let tmux = tmux();
    let dir = tempfile::tempdir().expect("temp dir");
    // The answers as plain text, from a pipe with the same flags, to find on the screen.
    let flags = ["--temperature", "0", "--max-tokens", "8"];
    let one = chat_pipe_with(&model(), &flags, "hi\n", dir.path()).stdout;
    let two = chat_pipe_with(&model(), &flags, "hi\nthere\n", dir.path()).stdout;
    let one = String::from_utf8(one).expect("UTF-8");
    let two = String::from_utf8(two).expect("UTF-8");
    let second = two
        .strip_prefix(&one)
        .expect("the first answer comes first");
    // The first few characters of each (8 tokens of noise fit in a 200-column line).
    let head = |s: &str| -> String { s.trim().chars().take(6).collect() };
    let command = format!(
        "XDG_CACHE_HOME={} {} chat --model {} --temperature 0 --max-tokens 8",
        dir.path().display(),
        env!("CARGO_BIN_EXE_frugal"),
        model()
    );
    let session = Session::start(tmux, dir.path(), "frugalchat", 200, &command);
    session.cmd(&["send-keys", "-t", session.name, "hi", "Enter"]);
    let screen = session.wait_for("the first answer", |s| s.matches("tok/s]").count() >= 1);
    let first = head(&one);
    assert!(
        screen.contains(&first),
        "first answer {first:?} not on screen:\n{screen}"
    );
    session.cmd(&["send-keys", "-t", session.name, "there", "Enter"]);
    let screen = session.wait_for("the second answer", |s| s.matches("tok/s]").count() >= 2);
    assert!(screen.contains("> there"), "{screen}");
    let second = head(second);
    assert!(
        screen.contains(&second),
        "second answer {second:?} not on screen:\n{screen}"
    );
    assert!(screen.contains(" tokens, "), "{screen}");
    session.cmd(&["send-keys", "-t", session.name, "/exit", "Enter"]);
    session.wait_for("the exit", |s| !s.contains("/help") || s.is_empty());
}

/// Ctrl-C during an answer stops that answer and gives the prompt back; the session goes on:
/// the next turn is answered to its end, and `/exit` leaves. The fixture's greedy answer to
/// "hello" runs to the 1,500-token limit, so it is still running when the key arrives (the
/// key goes as soon as the answer shows).
#[test]
fn ctrl_c_stops_the_answer_and_the_session_continues() {
    let tmux = tmux();
    let dir = tempfile::tempdir().expect("temp dir");
    let command = format!(
        "XDG_CACHE_HOME={} {} chat --model {} --temperature 0 --max-tokens 1500",
        dir.path().display(),
        env!("CARGO_BIN_EXE_frugal"),
        model()
    );
    let session = Session::start(tmux, dir.path(), "frugalctrlc", 200, &command);
    // The prompt is back when the last non-blank line is a bare `>` after `n` speed lines.
    let prompt_back = |s: &str, n: usize| -> bool {
        s.matches("tok/s").count() >= n
            && s.lines().rev().find(|l| !l.trim().is_empty()) == Some(">")
    };

    session.cmd(&["send-keys", "-t", session.name, "hello", "Enter"]);
    // Started: some text shows below the question.
    session.wait_for("the first answer to start", |s| {
        s.split("> hello")
            .nth(1)
            .is_some_and(|rest| !rest.trim().is_empty())
    });
    session.cmd(&["send-keys", "-t", session.name, "C-c"]);
    let screen = session.wait_for("the first answer to stop", |s| prompt_back(s, 1));
    assert!(screen.contains(", stopped]"), "{screen}");
    assert!(!screen.contains("[1500 tokens"), "{screen}");

    // The session is still there: the next turn (with the stopped answer in its history) is
    // answered to its end.
    session.cmd(&["send-keys", "-t", session.name, "why?", "Enter"]);
    let screen = session.wait_for("the second answer", |s| prompt_back(s, 2));
    let after = screen.split("> why?").nth(1).expect("the second question");
    let stats = after.rfind("tok/s").expect("a speed line");
    let answer = &after[..after[..stats].rfind('[').expect("the speed line's bracket")];
    assert!(!answer.trim().is_empty(), "no second answer:\n{screen}");
    assert!(!after[stats..].contains("stopped"), "{screen}");

    session.cmd(&["send-keys", "-t", session.name, "/exit", "Enter"]);
    session.wait_for("the exit", |s| !s.contains("/help") || s.is_empty());
}

/// `frugal chat` with no `--model` talks to the embedded default model: on a terminal its
/// column-by-column reasoning is dimmed (SGR 2) and the answer after it is plain.
#[test]
fn default_model_chat_in_tmux() {
    let tmux = tmux();
    let dir = tempfile::tempdir().expect("temp dir");
    let command = format!(
        "XDG_CACHE_HOME={} {} chat",
        dir.path().display(),
        env!("CARGO_BIN_EXE_frugal"),
    );
    let session = Session::start(tmux, dir.path(), "frugaldefault", 120, &command);
    session.cmd(&[
        "send-keys",
        "-t",
        session.name,
        "What is 4821 + 377?",
        "Enter",
    ]);
    session.wait_for("the answer", |s| s.contains("tok/s]"));
    // With the escape sequences: the reasoning sits inside dim / reset pairs.
    let styled = String::from_utf8_lossy(
        &session
            .cmd(&["capture-pane", "-p", "-e", "-t", session.name])
            .stdout,
    )
    .into_owned();
    let dim = styled.find("\x1b[2m").expect("dimmed text");
    let working = styled
        .find("1: 1+7+0=8 c0")
        .expect("the first column's line");
    let answer = styled.find("The answer is 5198.").expect("the answer");
    assert!(dim < working && working < answer, "{styled:?}");
    // The answer line itself is not dim.
    let answer_line = styled[..answer].rsplit('\n').next().unwrap_or("");
    assert!(!answer_line.contains("\x1b[2m"), "{styled:?}");
    session.cmd(&["send-keys", "-t", session.name, "/exit", "Enter"]);
    session.wait_for("the exit", |s| !s.contains("/help") || s.is_empty());
}
