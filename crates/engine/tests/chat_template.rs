//! Chat templates rendered by frugal must equal transformers' `apply_chat_template` output.
//!
//! `fixtures/chat_template/cases.json` holds the expected renderings, made by
//! `fixtures/chat_template/make_template_refs.py` with transformers itself. The model templates
//! are read from the shared reference configs (the same bytes the script rendered).

use std::collections::HashMap;
use std::path::PathBuf;

use frugal_engine::chat_template::{ChatRequest, ChatTemplate, ChatTemplateError, Message};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use frugal_testdata::reference_dir;

fn fixtures_dir() -> PathBuf {
    frugal_testdata::fixtures_dir().join("chat_template")
}

#[derive(Deserialize)]
struct Fixture {
    templates: HashMap<String, TemplateSpec>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct TemplateSpec {
    path: Option<String>,
    json_key: Option<String>,
    inline: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Length of the template the script rendered (reference templates only).
    utf8_bytes: Option<usize>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    template: String,
    messages: Vec<Value>,
    add_generation_prompt: bool,
    tools: Option<Value>,
    #[serde(default)]
    extra: Map<String, Value>,
    expected: Option<String>,
    error: Option<ExpectedError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ExpectedError {
    /// `raise_exception(message)` was called.
    Raised(String),
    /// Rendering failed some other way (the Python message is informative only).
    Other(String),
}

fn load_template_source(spec: &TemplateSpec) -> String {
    if let Some(text) = &spec.inline {
        return text.clone();
    }
    let rel = spec
        .path
        .as_deref()
        .expect("fixture template has a path or inline text");
    let path = reference_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read template {}: {e}", path.display()));
    match &spec.json_key {
        None => text,
        Some(key) => {
            let doc: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            doc[key]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no string `{key}`", path.display()))
                .to_owned()
        }
    }
}

fn load_fixture() -> Fixture {
    let path = fixtures_dir().join("cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}

/// A readable account of where two renderings part: the first differing line and character,
/// with escaped context, then both texts in full when they are short.
fn diff(expected: &str, actual: &str) -> String {
    let common = expected
        .char_indices()
        .zip(actual.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| expected.len().min(actual.len()));
    let line = expected[..common].matches('\n').count() + 1;
    let ctx_start = expected[..common]
        .char_indices()
        .rev()
        .nth(40)
        .map_or(0, |(i, _)| i);
    let tail = |s: &str| {
        s[common.min(s.len())..]
            .chars()
            .take(60)
            .collect::<String>()
    };
    let mut out = format!(
        "first difference at byte {common} (line {line}) after {:?}\n  expected: {:?}\n  actual:   {:?}\n",
        &expected[ctx_start..common],
        tail(expected),
        tail(actual)
    );
    if expected.len() + actual.len() < 4000 {
        out.push_str(&format!(
            "  full expected: {expected:?}\n  full actual:   {actual:?}\n"
        ));
    }
    out
}

fn build_templates(fixture: &Fixture) -> HashMap<String, ChatTemplate> {
    fixture
        .templates
        .iter()
        .map(|(id, spec)| {
            let source = load_template_source(spec);
            if let Some(n) = spec.utf8_bytes {
                assert_eq!(
                    source.len(),
                    n,
                    "reference template {id} changed since cases.json was made; rerun \
                     fixtures/chat_template/make_template_refs.py"
                );
            }
            let template = ChatTemplate::new(
                &source,
                spec.bos_token.as_deref(),
                spec.eos_token.as_deref(),
            )
            .unwrap_or_else(|e| panic!("template {id} does not compile: {e}"));
            (id.clone(), template)
        })
        .collect()
}

/// Checks one rendering result against the case's expectation; `None` when it matches.
fn check(case: &Case, result: Result<String, ChatTemplateError>) -> Option<String> {
    match (&case.expected, &case.error, result) {
        (Some(want), _, Ok(got)) if *want == got => None,
        (Some(want), _, Ok(got)) => Some(diff(want, &got)),
        (Some(_), _, Err(e)) => Some(format!("expected a rendering, got error: {e}")),
        (None, Some(ExpectedError::Raised(want)), Err(ChatTemplateError::Raised { message })) => {
            (*want != message).then(|| format!("raised {message:?}, expected {want:?}"))
        }
        (None, Some(ExpectedError::Other(_)), Err(ChatTemplateError::Raised { message })) => Some(
            format!("expected a non-raise_exception failure, got raise_exception({message:?})"),
        ),
        // Where Jinja2 failed on an undefined value we must fail on one too (minijinja reports
        // `'x' + undefined` as an invalid operation, so check the text, not the variant).
        // Other Python errors (TypeError, ...) may be any non-raise failure.
        (None, Some(ExpectedError::Other(py)), Err(e)) => (py.starts_with("UndefinedError")
            && !e.to_string().contains("undefined"))
        .then(|| format!("expected an undefined-value error ({py}), got: {e}")),
        (None, Some(ExpectedError::Raised(want)), Err(e)) => {
            Some(format!("expected raise_exception({want:?}), got: {e}"))
        }
        (None, Some(e), Ok(got)) => {
            let want = match e {
                ExpectedError::Raised(m) | ExpectedError::Other(m) => m,
            };
            Some(format!("expected failure ({want}), but rendered {got:?}"))
        }
        (None, None, _) => Some("fixture case has neither `expected` nor `error`".into()),
    }
}

#[test]
fn renders_match_transformers() {
    let fixture = load_fixture();
    let templates = build_templates(&fixture);
    assert!(fixture.cases.len() > 100, "fixture has too few cases");
    let mut failures = Vec::new();
    for case in &fixture.cases {
        let template = &templates[&case.template];
        // Typed path: the messages must fit `Message` without losing anything the template sees.
        let messages: Vec<Message> = case
            .messages
            .iter()
            .map(|m| serde_json::from_value(m.clone()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: message does not deserialize: {e}", case.name));
        let req = ChatRequest {
            messages,
            add_generation_prompt: case.add_generation_prompt,
            tools: case.tools.clone(),
            extra: case.extra.clone(),
        };
        if let Some(problem) = check(case, template.render(&req)) {
            failures.push(format!("--- {} (typed)\n{problem}", case.name));
        }
        // Raw JSON path.
        let raw = template.render_json(
            &case.messages,
            case.add_generation_prompt,
            case.tools.as_ref(),
            &case.extra,
        );
        if let Some(problem) = check(case, raw) {
            failures.push(format!("--- {} (raw json)\n{problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renderings differ from transformers:\n{}",
        failures.len(),
        2 * fixture.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_reference_template_and_error_kind_is_covered() {
    let fixture = load_fixture();
    for id in [
        "deepseek-r1",
        "deepseek-r1-distill",
        "deepseek-v3",
        "deepseek-v2-lite-chat",
        "qwen3",
        "qwen3-base",
        "mixtral-instruct",
    ] {
        let n = fixture
            .cases
            .iter()
            .filter(|c| c.template == id && c.expected.is_some())
            .count();
        assert!(n >= 20, "template {id} has only {n} rendered cases");
    }
    assert!(fixture
        .cases
        .iter()
        .any(|c| matches!(c.error, Some(ExpectedError::Raised(_)))));
    assert!(fixture
        .cases
        .iter()
        .any(|c| matches!(c.error, Some(ExpectedError::Other(_)))));
}

fn render_str(template: &str, ctx: Value) -> Result<String, ChatTemplateError> {
    let t = ChatTemplate::new(template, Some("<s>"), None)?;
    let extra = match ctx {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    t.render(&ChatRequest {
        messages: vec![Message::new("user", "hi")],
        extra,
        ..Default::default()
    })
}

#[test]
fn syntax_error_reports_line() {
    let err = ChatTemplate::new("line one\n{{ ok }}\n{% if %}\n", None, None).unwrap_err();
    match err {
        ChatTemplateError::Syntax { line, message } => {
            assert_eq!(line, Some(3), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(matches!(
        ChatTemplate::new("{% for x in y %}", None, None),
        Err(ChatTemplateError::Syntax { .. })
    ));
}

#[test]
fn raise_exception_surfaces_message() {
    let err = render_str(
        "a\n{{ raise_exception('bad roles: ' + messages[0].role) }}",
        json!({}),
    )
    .unwrap_err();
    match err {
        ChatTemplateError::Raised { message } => assert_eq!(message, "bad roles: user"),
        other => panic!("expected Raised, got {other:?}"),
    }
}

#[test]
fn undefined_values_fail_like_jinja2() {
    // Attribute of an undefined value, and undefined in `+`, fail in Jinja2.
    for src in [
        "{{ nothing.attr }}",
        "{{ 'a' + nothing }}",
        "{{ messages[0].missing + 'x' }}",
    ] {
        match render_str(src, json!({})) {
            Err(ChatTemplateError::Undefined { .. }) | Err(ChatTemplateError::Render { .. }) => {}
            other => panic!("{src}: expected an undefined-value error, got {other:?}"),
        }
    }
    // Printing, testing and iterating undefined values is fine.
    let out = render_str(
        "[{{ nothing }}]{{ nothing is defined }}{% for x in nothing %}x{% endfor %}{{ eos_token is defined }}",
        json!({}),
    )
    .unwrap();
    assert_eq!(out, "[]FalseFalse");
}

#[test]
fn tojson_does_not_html_escape_and_takes_python_options() {
    let out = render_str(
        "{{ v | tojson }}|{{ v | tojson(indent=1) }}|{{ v | tojson(true) }}|{{ [] | tojson(indent=2) }}",
        json!({"v": {"b": "<a href='x'>&é", "a": [1, 2.0]}}),
    )
    .unwrap();
    assert_eq!(
        out,
        "{\"b\": \"<a href='x'>&é\", \"a\": [1, 2.0]}|{\n \"b\": \"<a href='x'>&é\",\n \"a\": [\n  1,\n  2.0\n ]\n}|{\"b\": \"<a href='x'>&\\u00e9\", \"a\": [1, 2.0]}|[]"
    );
    assert!(render_str("{{ 1 | tojson(bogus=1) }}", json!({})).is_err());
}

#[test]
fn strftime_now_formats_local_time() {
    let out = render_str("{{ strftime_now('%Y-%m-%d %H:%M 100%%') }}", json!({})).unwrap();
    let (date, rest) = out.split_once(' ').unwrap();
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{out}");
    let year: i32 = parts[0].parse().unwrap();
    assert!(year >= 2024, "{out}");
    assert!(rest.ends_with(" 100%"), "{out}");
}

#[test]
fn request_errors_are_reported() {
    let t = ChatTemplate::new("{{ messages | length }}", None, None).unwrap();
    let mut req = ChatRequest {
        messages: vec![Message::new("user", "x")],
        ..Default::default()
    };
    req.extra.insert("messages".into(), json!([]));
    assert!(
        matches!(t.render(&req), Err(ChatTemplateError::ReservedVariable { name }) if name == "messages")
    );
    req.extra.clear();
    req.tools = Some(json!({"type": "function"}));
    assert!(matches!(
        t.render(&req),
        Err(ChatTemplateError::InvalidTools { .. })
    ));
    req.tools = Some(json!([1]));
    assert!(matches!(
        t.render(&req),
        Err(ChatTemplateError::InvalidTools { .. })
    ));
    let bad = t.render_json(&[json!("not an object")], false, None, &Map::new());
    assert!(matches!(
        bad,
        Err(ChatTemplateError::InvalidMessage { index: 0, .. })
    ));
}

#[test]
fn extra_variables_override_special_tokens() {
    let t = ChatTemplate::new(
        "{{ bos_token }}|{{ eos_token }}|{{ enable_thinking }}",
        Some("<s>"),
        Some("</s>"),
    )
    .unwrap();
    let mut req = ChatRequest {
        messages: vec![Message::new("user", "x")],
        ..Default::default()
    };
    req.extra.insert("eos_token".into(), json!("<END>"));
    req.extra.insert("enable_thinking".into(), json!(false));
    assert_eq!(t.render(&req).unwrap(), "<s>|<END>|False");
}

#[test]
fn openai_message_json_round_trips() {
    let raw = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                       {"type": "function", "function": {"name": "g", "arguments": {"b": [true]}}}],
        "custom": 3
    });
    let m: Message = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(m.content, None);
    let calls = m.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.arguments, json!("{\"a\": 1}"));
    assert_eq!(calls[1].function.arguments, json!({"b": [true]}));
    assert_eq!(m.extra["custom"], json!(3));
    assert_eq!(serde_json::to_value(&m).unwrap(), raw);
}
