//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! Hugging Face models ship a Jinja2 template (`chat_template` in `tokenizer_config.json`, or a
//! `chat_template.jinja` file) that transformers renders in `apply_chat_template`. This module
//! renders the same templates with [`minijinja`] and reproduces transformers' environment
//! (`transformers/utils/chat_template_utils.py`, checked against transformers 5.24):
//!
//! * Jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the
//!   `loopcontrols` extension (`{% break %}`, `{% continue %}`);
//! * globals `raise_exception(msg)` (fails rendering with `msg`, here
//!   [`ChatTemplateError::Raised`]), `strftime_now(fmt)` (local time, `datetime.now()`),
//!   `namespace(...)` and `dict(...)`;
//! * the `tojson` filter overridden to `json.dumps(x, ensure_ascii=False, indent=None,
//!   separators=None, sort_keys=False)` (no HTML escaping, Python separators);
//! * Python string and dict methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, ...)
//!   through `minijinja_contrib::pycompat`, and Python's text for printed values (`None`,
//!   `True`, `1e-05`, `{'a': 1}`), see [`pyfmt`](self).
//!
//! The template variables are those `apply_chat_template(..., tokenize=False)` passes: the
//! tokenizer's special tokens (`bos_token`, `eos_token` when the tokenizer has them), then the
//! caller's extra variables (which may override them), `messages`, `tools`, `documents` (always
//! none here) and `add_generation_prompt`. Messages go in as JSON, normalized as transformers
//! does: top-level keys whose value is null are dropped (so `content: null` reaches the template
//! as a *missing* key, which several DeepSeek templates then fail on), and a message with
//! reasoning (`reasoning_content`, `thinking` or `reasoning`) gets it under both `thinking`
//! and `reasoning_content`.
//!
//! ```
//! use frugal_engine::chat_template::{ChatRequest, ChatTemplate, Message};
//!
//! let template = ChatTemplate::new(
//!     "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\
//!      {% if add_generation_prompt %}<assistant>{% endif %}",
//!     Some("<s>"),
//!     Some("</s>"),
//! )?;
//! let req = ChatRequest {
//!     messages: vec![Message::new("user", "Hi")],
//!     add_generation_prompt: true,
//!     ..ChatRequest::default()
//! };
//! assert_eq!(template.render(&req)?, "<s><user>Hi<assistant>");
//! # Ok::<(), frugal_engine::chat_template::ChatTemplateError>(())
//! ```
//!
//! The `string` and `join` filters and the `sequence` test are replaced by Jinja2's versions,
//! and transformers' `{% generation %}` tag is accepted (it renders its body unchanged).
//!
//! Known differences from Jinja2 that the supported templates do not hit: the `~` operator
//! uses minijinja's text for `none`/booleans (`none`, `true` where Python writes `None`,
//! `True`); `str.isprintable()` in reprs knows only the common non-printable characters; Python
//! `%` string formatting is not available; `strftime_now` fails on `%Z`/`%z` where Python
//! prints nothing.

mod pyfmt;

use std::fmt;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Rest, Serde, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use pyfmt::JsonOptions;

/// The name the template is registered under inside its environment (it appears in errors).
const TEMPLATE_NAME: &str = "chat_template";

/// Variables `apply_chat_template` sets itself; extra variables may not reuse them (Python
/// raises "got multiple values for keyword argument").
const RESERVED_VARIABLES: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// Why a chat template could not be built or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatTemplateError {
    /// The template source is not valid Jinja.
    #[error("chat template syntax error (line {line:?}): {message}")]
    Syntax {
        /// 1-based line of the error in the template source, when known.
        line: Option<usize>,
        /// What the parser complained about.
        message: String,
    },
    /// The template called `raise_exception(message)`, typically to reject a conversation it
    /// cannot format (e.g. roles that do not alternate).
    #[error("chat template raised an exception: {message}")]
    Raised {
        /// The message the template passed to `raise_exception`.
        message: String,
    },
    /// The template used an undefined value where Jinja2 fails too (attribute of an undefined
    /// value, `'text' + undefined`, ...), e.g. a message key that is missing or was null.
    #[error("chat template used an undefined value (line {line:?}): {message}")]
    Undefined {
        /// 1-based line in the template source, when known.
        line: Option<usize>,
        /// The engine's description.
        message: String,
    },
    /// Any other failure while rendering (type errors such as concatenating a string and a
    /// dict, bad filter arguments, ...).
    #[error("chat template render error (line {line:?}): {message}")]
    Render {
        /// 1-based line in the template source, when known.
        line: Option<usize>,
        /// The engine's description.
        message: String,
    },
    /// An extra template variable uses a name that `apply_chat_template` sets itself.
    #[error("extra template variable `{name}` is reserved (set by the chat request itself)")]
    ReservedVariable {
        /// The offending variable name.
        name: String,
    },
    /// `tools` is not a JSON array of objects (tool schemas).
    #[error("tools must be a JSON array of objects (tool schemas), got {found}")]
    InvalidTools {
        /// What was given instead, e.g. "a string" or "an array holding a number".
        found: String,
    },
    /// A message is not a JSON object.
    #[error("message {index} must be a JSON object, got {found}")]
    InvalidMessage {
        /// Index of the message in the conversation.
        index: usize,
        /// The JSON type found.
        found: &'static str,
    },
}

/// A function call requested by the assistant, in OpenAI's shape
/// `{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed by the tool result's `tool_call_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `"function"` today.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// The function part of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments, passed to the template exactly as given: DeepSeek templates concatenate them
    /// and need a JSON *string*; Qwen3 templates accept a string or an object.
    pub arguments: Json,
}

/// One chat message, in the OpenAI chat-completions shape.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text; `None` (null) e.g. for an assistant message that only calls tools.
    #[serde(default)]
    pub content: Option<String>,
    /// The assistant's reasoning, kept apart from `content` (Qwen3 and DeepSeek-R1 APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Function calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Optional participant or tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any other keys, passed to the template unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl Message {
    /// A message with just a role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: Some(content.into()),
            ..Message::default()
        }
    }
}

/// Everything a chat template renders.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Append the header that starts a new assistant turn.
    #[serde(default)]
    pub add_generation_prompt: bool,
    /// Tool (function) schemas: a JSON array of objects, usually
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    #[serde(default)]
    pub tools: Option<Json>,
    /// More template variables, e.g. `{"enable_thinking": false}` for Qwen3.
    #[serde(default)]
    pub extra: Map<String, Json>,
}

/// A compiled chat template together with the special tokens it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// The error `raise_exception` fails with, found again in the error's source chain.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

impl ChatTemplate {
    /// Compiles `template` (Jinja2 source) for rendering with the given special tokens
    /// (`None` when the tokenizer has no such token: the variable is then undefined).
    pub fn new(
        template: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        configure(&mut env);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(template))
            .map_err(|e| convert_error(&e))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.map(str::to_owned),
            eos_token: eos_token.map(str::to_owned),
        })
    }

    /// Renders a conversation to prompt text, as `apply_chat_template(..., tokenize=False)`.
    pub fn render(&self, req: &ChatRequest) -> Result<String, ChatTemplateError> {
        let messages: Vec<Json> = req
            .messages
            .iter()
            .map(|m| {
                serde_json::to_value(m).expect("OK because Message serializes to a JSON object")
            })
            .collect();
        self.render_json(
            &messages,
            req.add_generation_prompt,
            req.tools.as_ref(),
            &req.extra,
        )
    }

    /// Like [`render`](Self::render), with messages given as raw JSON objects (for callers
    /// that pass through request bodies with keys [`Message`] does not know).
    pub fn render_json(
        &self,
        messages: &[Json],
        add_generation_prompt: bool,
        tools: Option<&Json>,
        extra: &Map<String, Json>,
    ) -> Result<String, ChatTemplateError> {
        let mut normalized = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let Json::Object(map) = message else {
                return Err(ChatTemplateError::InvalidMessage {
                    index,
                    found: json_type(message),
                });
            };
            normalized.push(Json::Object(alias_reasoning(drop_nulls(map))));
        }
        if let Some(tools) = tools {
            check_tools(tools)?;
        }

        // Order mirrors transformers: special tokens, then extra variables overriding them, then
        // the variables apply_chat_template passes by name.
        let mut ctx = Map::new();
        if let Some(bos) = &self.bos_token {
            ctx.insert("bos_token".into(), Json::String(bos.clone()));
        }
        if let Some(eos) = &self.eos_token {
            ctx.insert("eos_token".into(), Json::String(eos.clone()));
        }
        for (name, value) in extra {
            if RESERVED_VARIABLES.contains(&name.as_str()) {
                return Err(ChatTemplateError::ReservedVariable { name: name.clone() });
            }
            ctx.insert(name.clone(), value.clone());
        }
        ctx.insert("messages".into(), Json::Array(normalized));
        ctx.insert("tools".into(), tools.cloned().unwrap_or(Json::Null));
        ctx.insert("documents".into(), Json::Null);
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .expect("OK because new() registered the template under this name");
        template
            .render(Value::from(Serde(&ctx)))
            .map_err(|e| convert_error(&e))
    }
}

/// transformers' `AssistantTracker` extension adds `{% generation %}...{% endgeneration %}`,
/// which marks assistant text for token masks and renders its body unchanged. minijinja does
/// not know the tag, so it becomes `{% if true %}...{% endif %}`, keeping the whitespace-control
/// modifiers (`-`, `+`) so trimming is the same. (A tag spelled inside a string literal or a
/// `{% raw %}` block would be rewritten too; no known template does that.)
fn rewrite_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        // tag = "{%" [-+]? ws* name ws* [-+]? "%}" ...
        let inner = &tag[2..];
        let after_mod = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        let name_start = after_mod.trim_start();
        let name_len = name_start
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name_start.len());
        let replacement = match &name_start[..name_len] {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        let tail = name_start[name_len..].trim_start();
        let tail = tail.strip_prefix(['-', '+']).unwrap_or(tail);
        match replacement {
            Some(word) if tail.starts_with("%}") => {
                let prefix_len = tag.len() - name_start.len();
                out.push_str(&tag[..prefix_len]);
                out.push_str(word);
                rest = &name_start[name_len..];
            }
            _ => {
                out.push_str("{%");
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn check_tools(tools: &Json) -> Result<(), ChatTemplateError> {
    match tools {
        Json::Array(items) => match items.iter().find(|t| !t.is_object()) {
            None => Ok(()),
            Some(bad) => Err(ChatTemplateError::InvalidTools {
                found: format!("an array holding {}", json_type(bad)),
            }),
        },
        other => Err(ChatTemplateError::InvalidTools {
            found: json_type(other).into(),
        }),
    }
}

/// transformers' `_normalize_chat_messages`: keys whose value is None are removed, because
/// templates handle a missing key better than a None.
fn drop_nulls(message: &Map<String, Json>) -> Map<String, Json> {
    message
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// transformers' `_alias_reasoning_fields`: the first non-null of `reasoning_content`,
/// `thinking`, `reasoning` becomes `{"thinking": r, **message, "reasoning_content": r}` (the
/// key order matters to templates that print or iterate a message).
fn alias_reasoning(message: Map<String, Json>) -> Map<String, Json> {
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| message.get(*k).filter(|v| !v.is_null()).cloned());
    let Some(reasoning) = reasoning else {
        return message;
    };
    let mut out = Map::new();
    out.insert("thinking".into(), reasoning.clone());
    for (k, v) in message {
        // Re-inserting "thinking" keeps its first position, as a Python dict update does.
        out.insert(k, v);
    }
    out.insert("reasoning_content".into(), reasoning);
    out
}

/// Sets up `env` like transformers' Jinja2 environment.
fn configure(env: &mut Environment<'static>) {
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("OK because the default delimiters are valid"),
    );
    // Jinja2's default Undefined: prints as "", iterates as empty, is false; attribute access
    // and arithmetic on it fail.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        let mut text = String::new();
        pyfmt::write_str(&mut text, value)?;
        out.write_str(&text).map_err(|e| {
            minijinja::Error::new(ErrorKind::WriteFailure, "cannot write template output")
                .with_source(e)
        })
    });
    env.add_filter("tojson", tojson);
    env.add_filter(
        "string",
        |value: &Value| -> Result<String, minijinja::Error> {
            let mut text = String::new();
            pyfmt::write_str(&mut text, value)?;
            Ok(text)
        },
    );
    env.add_filter("join", join);
    // Jinja2's `sequence` test is "has len() and []": strings and dicts are sequences too.
    env.add_test("sequence", |value: &Value| {
        value.is_undefined()
            || matches!(
                value.kind(),
                ValueKind::String | ValueKind::Seq | ValueKind::Map | ValueKind::Bytes
            )
    });
    env.add_function(
        "raise_exception",
        |message: &Value| -> Result<Value, minijinja::Error> {
            let mut text = String::new();
            pyfmt::write_str(&mut text, message)?;
            Err(
                minijinja::Error::new(ErrorKind::InvalidOperation, text.clone())
                    .with_source(RaisedByTemplate(text)),
            )
        },
    );
    env.add_function("strftime_now", strftime_now);
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`; the options may be given by position or by name.
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(minijinja::Error::new(
            ErrorKind::TooManyArguments,
            format!("tojson takes at most {} options", NAMES.len()),
        ));
    }
    let mut opts: [Value; 4] = Default::default();
    for (slot, arg) in opts.iter_mut().zip(args.iter()) {
        *slot = arg.clone();
    }
    for (slot, name) in opts.iter_mut().zip(NAMES) {
        if let Some(v) = kwargs.get::<Option<Value>>(name)? {
            *slot = v;
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = opts;

    let mut json = JsonOptions {
        ensure_ascii: ensure_ascii.is_true(),
        sort_keys: sort_keys.is_true(),
        ..JsonOptions::default()
    };
    match indent.kind() {
        ValueKind::Undefined | ValueKind::None => {}
        ValueKind::String => json.indent = Some(indent.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number if indent.is_integer() => {
            let n = i64::try_from(indent.clone())?;
            // Python: ' ' * n, so a negative indent is the empty string (newlines only).
            let n = usize::try_from(n.clamp(0, 1024)).expect("OK because clamped to 0..=1024");
            json.indent = Some(" ".repeat(n));
        }
        kind => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: indent must be an int or a string, not {kind}"),
            ))
        }
    }
    if json.indent.is_some() {
        json.item_separator = ",".into();
    }
    match separators.kind() {
        ValueKind::Undefined | ValueKind::None => {}
        _ => {
            let parts: Vec<Value> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                    json.item_separator = item.as_str().unwrap_or_default().to_owned();
                    json.key_separator = key.as_str().unwrap_or_default().to_owned();
                }
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings (item, key)",
                    ))
                }
            }
        }
    }
    Ok(Value::from(pyfmt::json_dumps(value, &json)?))
}

/// Jinja2's `join(value, d='', attribute=None)`: items as Python's `str()` (`None`, `True`),
/// optionally an attribute (dotted path, numeric parts index) of each item.
fn join(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    if args.len() > 2 {
        return Err(minijinja::Error::new(
            ErrorKind::TooManyArguments,
            "join takes at most 2 arguments",
        ));
    }
    let mut joiner = args.first().cloned().unwrap_or(Value::from(""));
    let mut attribute = args.get(1).cloned().unwrap_or(Value::UNDEFINED);
    if let Some(v) = kwargs.get::<Option<Value>>("d")? {
        joiner = v;
    }
    if let Some(v) = kwargs.get::<Option<Value>>("attribute")? {
        attribute = v;
    }
    kwargs.assert_all_used()?;
    let mut sep = String::new();
    pyfmt::write_str(&mut sep, &joiner)?;
    let mut out = String::new();
    if value.is_undefined() {
        return Ok(out);
    }
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(&sep);
        }
        let item = if attribute.is_undefined() || attribute.is_none() {
            item
        } else if let Some(path) = attribute.as_str() {
            let mut v = item;
            for part in path.split('.') {
                v = match part.parse::<usize>() {
                    Ok(idx) => v.get_item_by_index(idx)?,
                    Err(_) => v.get_attr(part)?,
                };
            }
            v
        } else {
            item.get_item(&attribute)?
        };
        pyfmt::write_str(&mut out, &item)?;
    }
    Ok(out)
}

/// `datetime.now().strftime(format)`: local wall-clock time, no time zone (`%Z`/`%z` fail, where
/// Python prints nothing for a naive datetime).
fn strftime_now(format: &str) -> Result<String, minijinja::Error> {
    let now = jiff::Zoned::now().datetime();
    jiff::fmt::strtime::format(format, now).map_err(|e| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now({format:?}): {e}"),
        )
    })
}

/// Maps a minijinja error onto [`ChatTemplateError`], recognising `raise_exception`.
fn convert_error(err: &minijinja::Error) -> ChatTemplateError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedByTemplate>() {
            return ChatTemplateError::Raised {
                message: raised.0.clone(),
            };
        }
        source = e.source();
    }
    let line = err.line();
    let message = err.to_string();
    match err.kind() {
        ErrorKind::SyntaxError | ErrorKind::BadEscape => {
            ChatTemplateError::Syntax { line, message }
        }
        ErrorKind::UndefinedError => ChatTemplateError::Undefined { line, message },
        _ => ChatTemplateError::Render { line, message },
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_generation_tags;

    #[test]
    fn generation_tags_become_if_true() {
        assert_eq!(
            rewrite_generation_tags(
                "a{%- generation %}b{%+endgeneration-%}c{% generations %}{{ '{%' }}"
            ),
            "a{%- if true %}b{%+endif-%}c{% generations %}{{ '{%' }}"
        );
    }
}
