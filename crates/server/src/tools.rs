//! Tool calls in model output, per template family.
//!
//! * DeepSeek V3 / R1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`
//!   `\n```json\nARGS\n```<｜tool▁call▁end｜>` (repeated), then `<｜tool▁calls▁end｜>`, as their
//!   chat templates write past calls.
//! * Qwen3 (Hermes style): `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`.
//!
//! [`ToolSplitter`] passes content through until the first call marker, holding back only a
//! tail that could begin one, and parses everything after it as calls when the output ends.

use serde_json::{json, Value};

/// How a model marks tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// The template knows no tool calls.
    None,
    /// DeepSeek V3 / R1 markers.
    DeepSeek,
    /// `<tool_call>` JSON blocks (Qwen3, Qwen2.5, Hermes).
    Hermes,
}

const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
const DS_SEP: &str = "<｜tool▁sep｜>";
const HERMES_BEGIN: &str = "<tool_call>";
const HERMES_END: &str = "</tool_call>";

impl ToolFormat {
    /// The family whose markers a chat template's source writes.
    pub fn detect(template: &str) -> Self {
        if template.contains(DS_CALL_BEGIN) {
            ToolFormat::DeepSeek
        } else if template.contains(HERMES_BEGIN) {
            ToolFormat::Hermes
        } else {
            ToolFormat::None
        }
    }

    /// Strings that start the calls section.
    fn starts(self) -> &'static [&'static str] {
        match self {
            ToolFormat::None => &[],
            ToolFormat::DeepSeek => &[DS_CALLS_BEGIN, DS_CALL_BEGIN],
            ToolFormat::Hermes => &[HERMES_BEGIN],
        }
    }
}

/// A parsed call, as OpenAI returns it (`arguments` a JSON string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCall {
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

impl ParsedCall {
    /// OpenAI's `tool_calls[i]` object.
    pub fn json(&self, index: usize, id: &str) -> Value {
        json!({
            "index": index,
            "id": id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// Splits streamed content into text and the calls after the first marker.
#[derive(Debug)]
pub struct ToolSplitter {
    format: ToolFormat,
    held: String,
    calls: Option<String>,
}

impl ToolSplitter {
    /// A splitter for `format`.
    pub fn new(format: ToolFormat) -> Self {
        ToolSplitter {
            format,
            held: String::new(),
            calls: None,
        }
    }

    /// Adds content; returns the content that is surely not part of a call.
    pub fn push(&mut self, piece: &str) -> String {
        if let Some(calls) = &mut self.calls {
            calls.push_str(piece);
            return String::new();
        }
        self.held.push_str(piece);
        let found = self
            .format
            .starts()
            .iter()
            .filter_map(|m| self.held.find(m))
            .min();
        if let Some(pos) = found {
            self.calls = Some(self.held.split_off(pos));
            return std::mem::take(&mut self.held);
        }
        // Hold back a tail that a marker starts with.
        let keep = (0..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.format.starts().iter().any(|m| m.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep);
        std::mem::replace(&mut self.held, rest)
    }

    /// Ends the output: the held content, and the calls found. Text after the marker that
    /// does not parse as calls is returned as content (nothing is lost).
    pub fn finish(&mut self) -> (String, Vec<ParsedCall>) {
        let mut content = std::mem::take(&mut self.held);
        let Some(text) = self.calls.take() else {
            return (content, Vec::new());
        };
        let calls = match self.format {
            ToolFormat::DeepSeek => parse_deepseek(&text),
            ToolFormat::Hermes => parse_hermes(&text),
            ToolFormat::None => Vec::new(),
        };
        if calls.is_empty() {
            content.push_str(&text);
        }
        (content, calls)
    }
}

/// Parses DeepSeek's call blocks.
fn parse_deepseek(text: &str) -> Vec<ParsedCall> {
    let mut calls = Vec::new();
    for block in text.split(DS_CALL_BEGIN).skip(1) {
        let block = block.split(DS_CALL_END).next().unwrap_or(block);
        let Some((_, rest)) = block.split_once(DS_SEP) else {
            continue;
        };
        let (name, args) = rest.split_once('\n').unwrap_or((rest, ""));
        let args = args.trim();
        let args = args
            .strip_prefix("```json")
            .or_else(|| args.strip_prefix("```"))
            .unwrap_or(args);
        let args = args.strip_suffix("```").unwrap_or(args).trim();
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        calls.push(ParsedCall {
            name: name.to_owned(),
            arguments: normalize_args(args),
        });
    }
    calls
}

/// Parses `<tool_call>{json}</tool_call>` blocks.
fn parse_hermes(text: &str) -> Vec<ParsedCall> {
    let mut calls = Vec::new();
    for block in text.split(HERMES_BEGIN).skip(1) {
        let body = block.split(HERMES_END).next().unwrap_or(block).trim();
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let arguments = match v.get("arguments") {
            Some(Value::String(s)) => normalize_args(s),
            Some(a) => a.to_string(),
            None => "{}".into(),
        };
        calls.push(ParsedCall {
            name: name.to_owned(),
            arguments,
        });
    }
    calls
}

/// Arguments as compact JSON when they parse, else as written.
fn normalize_args(args: &str) -> String {
    serde_json::from_str::<Value>(args).map_or_else(|_| args.to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The markup DeepSeek-V3's template writes for a past call (the model writes the same).
    #[test]
    fn deepseek_calls_split_from_content() {
        let out = "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
        let mut s = ToolSplitter::new(ToolFormat::DeepSeek);
        // Fed in small pieces, splitting the markers.
        let mut content = String::new();
        let chars: Vec<char> = out.chars().collect();
        for chunk in chars.chunks(3) {
            content.push_str(&s.push(&chunk.iter().collect::<String>()));
        }
        let (rest, calls) = s.finish();
        content.push_str(&rest);
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            [
                ParsedCall {
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                ParsedCall {
                    name: "get_time".into(),
                    arguments: "{}".into()
                }
            ]
        );
    }

    #[test]
    fn hermes_calls_and_plain_text() {
        let mut s = ToolSplitter::new(ToolFormat::Hermes);
        let mut content = s.push("Sure <tool_");
        content.push_str(
            &s.push(
                "call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
            ),
        );
        let (rest, calls) = s.finish();
        assert_eq!(content + &rest, "Sure ");
        assert_eq!(calls[0].name, "add");
        assert_eq!(calls[0].arguments, r#"{"a":1,"b":2}"#);

        // A `<` that starts no marker is released at the end; broken calls stay content.
        let mut s = ToolSplitter::new(ToolFormat::Hermes);
        let mut content = s.push("a < b <tool_call>not json");
        let (rest, calls) = s.finish();
        content.push_str(&rest);
        assert!(calls.is_empty());
        assert_eq!(content, "a < b <tool_call>not json");
    }
}
