//! Tool-call parsing against the models' own chat templates: a past assistant turn with two
//! tool calls is rendered by the real DeepSeek-R1 and Qwen3 templates (the markup
//! the models were trained to write), and `ToolSplitter` must recover the same calls from that
//! text, fed in small pieces as a stream would arrive. (DeepSeek-V3's template writes calls
//! only for `content: None`, which transformers' message normalization, and ours, drops.)

use frugal_engine::chat_template::ChatTemplate;
use frugal_server::tools::{ToolFormat, ToolSplitter};
use serde_json::{json, Value};

/// Reads a template from the shared reference set.
fn template(rel: &str, json_key: Option<&str>) -> String {
    let path = frugal_testdata::reference_dir().join("configs").join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    match json_key {
        None => text,
        Some(k) => serde_json::from_str::<Value>(&text).unwrap()[k]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

fn check(rel: &str, json_key: Option<&str>, bos: Option<&str>, eos: &str, format: ToolFormat) {
    let source = template(rel, json_key);
    assert_eq!(ToolFormat::detect(&source), format, "{rel}");
    let t = ChatTemplate::new(&source, bos, Some(eos)).unwrap();
    let calls = [
        ("get_weather", r#"{"city": "Paris", "unit": "celsius"}"#),
        ("get_time", r#"{"zone": "UTC+1"}"#),
    ];
    let messages = [
        json!({"role": "user", "content": "USER-TURN"}),
        json!({"role": "assistant", "content": "", "tool_calls": calls.iter().enumerate().map(|(i, (name, args))| json!({
            "id": format!("call_{i}"), "type": "function",
            "function": {"name": name, "arguments": args},
        })).collect::<Vec<_>>()}),
    ];
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let text = t
        .render_json(&messages, false, Some(&tools), &serde_json::Map::new())
        .unwrap();
    let answer = text.split("USER-TURN").nth(1).unwrap();

    let mut s = ToolSplitter::new(format);
    let mut content = String::new();
    let chars: Vec<char> = answer.chars().collect();
    for piece in chars.chunks(5) {
        content.push_str(&s.push(&piece.iter().collect::<String>()));
    }
    let (rest, got) = s.finish();
    content.push_str(&rest);
    assert_eq!(got.len(), 2, "{rel}: {answer:?}");
    for (call, (name, args)) in got.iter().zip(calls) {
        assert_eq!(call.name, name, "{rel}");
        let want: Value = serde_json::from_str(args).unwrap();
        let have: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(have, want, "{rel}");
    }
    assert!(!content.contains("get_weather"), "{rel}: {content:?}");
}

#[test]
fn deepseek_r1_template_calls() {
    check(
        "deepseek-ai__DeepSeek-R1/chat_template.jinja",
        None,
        Some("<｜begin▁of▁sentence｜>"),
        "<｜end▁of▁sentence｜>",
        ToolFormat::DeepSeek,
    );
}

#[test]
fn qwen3_template_calls() {
    check(
        "Qwen__Qwen3-1.7B/chat_template.jinja",
        None,
        None,
        "<|im_end|>",
        ToolFormat::Hermes,
    );
}
