//! `POST /v1/chat/completions`: render the conversation with the model's chat template, run
//! `n` choices, and answer with `reasoning_content` split from `content` (and `tool_calls`),
//! whole or streamed as `chat.completion.chunk` events.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use frugal_engine::reasoning::{prompt_opens_think, Delta, ReasoningParser};
use frugal_engine::scheduler::Event;
use serde_json::{json, Map, Value};

use crate::api::{ChatCompletionRequest, Sampling};
use crate::error::ApiError;
use crate::output::{self, chat_logprob, finish_name, sse_data, Usage};
use crate::tools::{ParsedCall, ToolFormat, ToolSplitter};
use crate::{body_bytes, parse_json, unix_now, AppState};

/// One choice being assembled.
struct Choice {
    reasoning: ReasoningParser,
    tools: Option<ToolSplitter>,
    reasoning_text: String,
    content: String,
    calls: Vec<ParsedCall>,
    logprobs: Vec<Value>,
    finish: Option<&'static str>,
}

/// Text deltas of one step.
#[derive(Default)]
struct Piece {
    reasoning: String,
    content: String,
}

impl Choice {
    fn new(state: &AppState, opens_think: bool, tools: bool) -> Self {
        let use_tools = tools && state.model.tool_format != ToolFormat::None;
        Choice {
            reasoning: ReasoningParser::new(state.model.style, opens_think),
            tools: use_tools.then(|| ToolSplitter::new(state.model.tool_format)),
            reasoning_text: String::new(),
            content: String::new(),
            calls: Vec::new(),
            logprobs: Vec::new(),
            finish: None,
        }
    }

    fn split(&mut self, deltas: Vec<Delta>) -> Piece {
        let mut p = Piece::default();
        for d in deltas {
            match d {
                Delta::Reasoning(r) => p.reasoning.push_str(&r),
                Delta::Content(c) => match &mut self.tools {
                    Some(t) => p.content.push_str(&t.push(&c)),
                    None => p.content.push_str(&c),
                },
            }
        }
        self.reasoning_text.push_str(&p.reasoning);
        self.content.push_str(&p.content);
        p
    }

    fn text(&mut self, text: &str) -> Piece {
        let deltas = self.reasoning.push(text);
        self.split(deltas)
    }

    /// The end: remaining text, the calls, and the finish reason.
    fn finish(&mut self, text: &str, reason: &'static str) -> Piece {
        let mut deltas = self.reasoning.push(text);
        deltas.extend(self.reasoning.finish().deltas);
        let mut p = self.split(deltas);
        if let Some(t) = &mut self.tools {
            let (rest, calls) = t.finish();
            p.content.push_str(&rest);
            self.content.push_str(&rest);
            self.calls = calls;
        }
        self.finish = Some(if self.calls.is_empty() {
            reason
        } else {
            "tool_calls"
        });
        p
    }
}

/// Content of a message: a string, or the text parts of an array of parts.
fn normalize_message(index: usize, m: &Value) -> Result<Value, ApiError> {
    let param = format!("messages[{index}]");
    let Value::Object(map) = m else {
        return Err(ApiError::bad_param(
            &param,
            format!("{param} must be an object"),
        ));
    };
    match map.get("role") {
        Some(Value::String(_)) => {}
        _ => {
            return Err(ApiError::bad_param(
                &param,
                format!("{param}.role must be a string"),
            ))
        }
    }
    let mut map = map.clone();
    match map.get("content") {
        // An assistant turn of only tool calls: clients send `null`, which template
        // normalization drops; DeepSeek-R1's template then fails on the missing key.
        None | Some(Value::Null) if map.contains_key("tool_calls") => {
            map.insert("content".into(), Value::String(String::new()));
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(ApiError::bad_param(
                            &param,
                            format!("{param}.content: only text parts are supported"),
                        ))
                    }
                }
            }
            map.insert("content".into(), Value::String(text));
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                &param,
                format!("{param}.content must be a string or an array of text parts"),
            ))
        }
    }
    Ok(Value::Object(map))
}

/// The handler.
pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let req: ChatCompletionRequest = parse_json(&bytes)?;
    let common: Sampling = parse_json(&bytes)?;
    let settings = output::settings(&state, common)?;

    let template = state.model.template.ok_or_else(|| {
        ApiError::bad_request("this model has no chat template; use /v1/completions")
    })?;
    if req.messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| normalize_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let top_logprobs = req.top_logprobs.unwrap_or(0) as usize;
    if top_logprobs > 20 {
        return Err(ApiError::bad_param(
            "top_logprobs",
            "top_logprobs must be between 0 and 20",
        ));
    }
    let logprobs = req.logprobs.unwrap_or(false).then_some(top_logprobs);
    let mut json_object = false;
    if let Some(f) = &req.response_format {
        match f.kind.as_str() {
            "text" => {}
            "json_object" => json_object = true,
            other => {
                return Err(ApiError::bad_param(
                    "response_format",
                    format!("response_format type {other:?} is not supported (text, json_object)"),
                ))
            }
        }
    }
    let tool_choice_none = matches!(&req.tool_choice, Some(Value::String(s)) if s == "none");
    let tools = match &req.tools {
        Some(t) if !t.is_empty() && !tool_choice_none => Some(Value::Array(t.clone())),
        _ => None,
    };
    let extra: Map<String, Value> = req.chat_template_kwargs.clone().unwrap_or_default();
    let prompt_text = template
        .render_json(&messages, true, tools.as_ref(), &extra)
        .map_err(|e| ApiError::bad_request(format!("chat template: {e}")))?;
    let prompt = state
        .model
        .tokenizer
        .encode(&prompt_text, false)
        .map_err(|e| ApiError::bad_request(format!("tokenizing the prompt: {e}")))?;
    let opens_think = prompt_opens_think(&prompt_text);
    let with_tools = tools.is_some();
    // DeepSeek's call markers are special tokens: keep special tokens in the text then.
    let skip_special = !(with_tools && state.model.tool_format == ToolFormat::DeepSeek);
    let rx = output::submit(
        &state,
        &[prompt],
        &settings,
        logprobs,
        skip_special,
        json_object,
    )?;

    let id = state.response_id("chatcmpl");
    let choices: Vec<Choice> = (0..settings.n)
        .map(|_| Choice::new(&state, opens_think, with_tools))
        .collect();
    if settings.stream {
        Ok(stream(state, rx, choices, id, settings.include_usage))
    } else {
        whole(state, rx, choices, id).await
    }
}

/// Collects every choice, then answers once.
async fn whole(
    state: Arc<AppState>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>,
    mut choices: Vec<Choice>,
    id: String,
) -> Result<Response, ApiError> {
    let mut usage = Usage::default();
    let mut left = choices.len();
    while left > 0 {
        let Some((i, ev)) = rx.recv().await else {
            return Err(ApiError::internal("the scheduler stopped"));
        };
        let c = &mut choices[i];
        match &ev {
            Event::Token { text, logprob, .. } => {
                c.text(text);
                if let Some(lp) = logprob {
                    c.logprobs.push(chat_logprob(&state, lp));
                }
            }
            Event::Done { text, finish, .. } => {
                usage.add(i == 0, &ev);
                c.finish(text, finish_name(finish));
                left -= 1;
            }
            Event::Error(e) => return Err(ApiError::internal(e.clone())),
        }
    }
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut message = json!({"role": "assistant", "content": c.content});
            if state.model.style != frugal_engine::reasoning::ReasoningStyle::None {
                message["reasoning_content"] = json!(c.reasoning_text);
            }
            if !c.calls.is_empty() {
                message["tool_calls"] = c
                    .calls
                    .iter()
                    .enumerate()
                    .map(|(k, call)| call.json(k, &format!("call_{id}_{i}_{k}")))
                    .collect();
                if c.content.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            json!({
                "index": i,
                "message": message,
                "logprobs": if c.logprobs.is_empty() { Value::Null } else { json!({"content": c.logprobs}) },
                "finish_reason": c.finish,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": state.model.id,
        "choices": choices,
        "usage": usage.json(),
    }))
    .into_response())
}

/// Streams `chat.completion.chunk` events; dropping the stream (client gone) drops `rx`,
/// which cancels the choices.
fn stream(
    state: Arc<AppState>,
    rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>,
    choices: Vec<Choice>,
    id: String,
    include_usage: bool,
) -> Response {
    let created = unix_now();
    let chunk = move |state: &AppState, choices: Value, usage: Option<Value>| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": state.model.id,
            "choices": choices,
        });
        if include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        sse_data(&v)
    };
    // The opening chunk of every choice: the role.
    let mut first = String::new();
    for i in 0..choices.len() {
        first.push_str(&chunk(
            &state,
            json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            None,
        ));
    }
    struct St {
        state: Arc<AppState>,
        rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>,
        choices: Vec<Choice>,
        left: usize,
        usage: Usage,
        first: Option<String>,
        over: bool,
    }
    let left = choices.len();
    let st = St {
        state,
        rx,
        choices,
        left,
        usage: Usage::default(),
        first: Some(first),
        over: false,
    };
    let s = futures_util::stream::unfold(st, move |mut st| {
        let chunk = chunk.clone();
        async move {
            if let Some(first) = st.first.take() {
                return Some((Ok(Bytes::from(first)), st));
            }
            if st.over {
                return None;
            }
            let out = match st.rx.recv().await {
                None => {
                    st.over = true;
                    sse_data(&ApiError::internal("the scheduler stopped").body())
                }
                Some((i, ev)) => {
                    let state = st.state.clone();
                    let c = &mut st.choices[i];
                    let delta_json = |p: &Piece| {
                        let mut d = Map::new();
                        if !p.reasoning.is_empty() {
                            d.insert("reasoning_content".into(), json!(p.reasoning));
                        }
                        if !p.content.is_empty() {
                            d.insert("content".into(), json!(p.content));
                        }
                        d
                    };
                    match &ev {
                        Event::Token { text, logprob, .. } => {
                            let p = c.text(text);
                            let d = delta_json(&p);
                            let lp = logprob.as_ref().map(|lp| chat_logprob(&state, lp));
                            if d.is_empty() && lp.is_none() {
                                String::new()
                            } else {
                                let lp = lp.map_or(Value::Null, |v| json!({"content": [v]}));
                                chunk(
                                    &state,
                                    json!([{"index": i, "delta": d, "logprobs": lp, "finish_reason": null}]),
                                    None,
                                )
                            }
                        }
                        Event::Done { text, finish, .. } => {
                            st.usage.add(i == 0, &ev);
                            let p = c.finish(text, finish_name(finish));
                            let mut d = delta_json(&p);
                            if !c.calls.is_empty() {
                                let calls: Vec<Value> = c
                                    .calls
                                    .iter()
                                    .enumerate()
                                    .map(|(k, call)| call.json(k, &format!("call_{i}_{k}")))
                                    .collect();
                                d.insert("tool_calls".into(), Value::Array(calls));
                            }
                            let mut out = chunk(
                                &state,
                                json!([{"index": i, "delta": d, "logprobs": null, "finish_reason": c.finish}]),
                                None,
                            );
                            st.left -= 1;
                            if st.left == 0 {
                                if include_usage {
                                    out.push_str(&chunk(&state, json!([]), Some(st.usage.json())));
                                }
                                out.push_str("data: [DONE]\n\n");
                                st.over = true;
                            }
                            out
                        }
                        Event::Error(e) => {
                            st.over = true;
                            sse_data(&ApiError::internal(e.clone()).body())
                        }
                    }
                }
            };
            Some((Ok(Bytes::from(out)), st))
        }
    });
    output::sse_response(s)
}
