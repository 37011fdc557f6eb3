//! `POST /v1/completions`: plain text continuation of one or more prompts (text or token ids),
//! whole or streamed as `text_completion` events. No template, no reasoning split.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use frugal_engine::scheduler::{Event, TokenLogprob};
use serde_json::{json, Map, Value};

use crate::api::{CompletionRequest, Prompt, Sampling};
use crate::error::ApiError;
use crate::output::{self, finish_name, sse_data, token_text, Usage};
use crate::{body_bytes, parse_json, unix_now, AppState};

/// Legacy logprobs of a choice: parallel lists.
#[derive(Default)]
struct Logprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top: Vec<Map<String, Value>>,
    offsets: Vec<usize>,
}

impl Logprobs {
    fn push(&mut self, state: &AppState, lp: &TokenLogprob, offset: usize) {
        self.tokens.push(token_text(state, lp.id).0);
        self.token_logprobs.push(lp.logprob);
        self.top.push(
            lp.top
                .iter()
                .map(|&(id, l)| (token_text(state, id).0, json!(l)))
                .collect(),
        );
        self.offsets.push(offset);
    }

    fn json(&self) -> Value {
        json!({
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top,
            "text_offset": self.offsets,
        })
    }
}

/// The handler.
pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(&state, body)?;
    let req: CompletionRequest = parse_json(&bytes)?;
    let common: Sampling = parse_json(&bytes)?;
    let settings = output::settings(&state, common)?;
    let tok = state.model.tokenizer;
    let encode = |t: &str| {
        tok.encode(t, true)
            .map_err(|e| ApiError::bad_param("prompt", format!("tokenizing the prompt: {e}")))
    };
    let prompts: Vec<Vec<u32>> = match req.prompt {
        Prompt::Text(t) => vec![encode(&t)?],
        Prompt::Texts(ts) => ts.iter().map(|t| encode(t)).collect::<Result<_, _>>()?,
        Prompt::Tokens(ids) => vec![ids],
        Prompt::TokenLists(l) => l,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad_param("prompt", "no prompt given"));
    }
    let vocab = tok.vocab_size().max(
        state
            .model
            .eos_token_ids
            .iter()
            .map(|&e| e as usize + 1)
            .max()
            .unwrap_or(0),
    );
    for p in &prompts {
        if let Some(&bad) = p.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::bad_param(
                "prompt",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
    }
    let top = req.logprobs.map(|n| n as usize);
    if top.is_some_and(|n| n > 5) {
        return Err(ApiError::bad_param(
            "logprobs",
            "logprobs must be between 0 and 5",
        ));
    }
    let echo: Vec<String> = if req.echo.unwrap_or(false) {
        prompts
            .iter()
            .map(|p| tok.decode(p, true).unwrap_or_default())
            .collect()
    } else {
        vec![String::new(); prompts.len()]
    };
    let rx = output::submit(&state, &prompts, &settings, top, true, false)?;
    let id = state.response_id("cmpl");
    let n = settings.n;
    let total = prompts.len() * n;
    if settings.stream {
        Ok(stream(
            state,
            rx,
            total,
            n,
            echo,
            id,
            settings.include_usage,
        ))
    } else {
        whole(state, rx, total, n, echo, id).await
    }
}

async fn whole(
    state: Arc<AppState>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>,
    total: usize,
    n: usize,
    echo: Vec<String>,
    id: String,
) -> Result<Response, ApiError> {
    let mut texts: Vec<String> = (0..total).map(|i| echo[i / n].clone()).collect();
    let mut lps: Vec<Logprobs> = (0..total).map(|_| Logprobs::default()).collect();
    let mut finish = vec![""; total];
    let mut usage = Usage::default();
    let mut left = total;
    while left > 0 {
        let Some((i, ev)) = rx.recv().await else {
            return Err(ApiError::internal("the scheduler stopped"));
        };
        match &ev {
            Event::Token { text, logprob, .. } => {
                if let Some(lp) = logprob {
                    lps[i].push(&state, lp, texts[i].len());
                }
                texts[i].push_str(text);
            }
            Event::Done {
                text, finish: f, ..
            } => {
                texts[i].push_str(text);
                finish[i] = finish_name(f);
                usage.add(i % n == 0, &ev);
                left -= 1;
            }
            Event::Error(e) => return Err(ApiError::internal(e.clone())),
        }
    }
    let with_lp = lps.iter().any(|l| !l.tokens.is_empty());
    let choices: Vec<Value> = (0..total)
        .map(|i| {
            json!({
                "index": i,
                "text": texts[i],
                "logprobs": if with_lp { lps[i].json() } else { Value::Null },
                "finish_reason": finish[i],
            })
        })
        .collect();
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": unix_now(),
        "model": state.model.id,
        "choices": choices,
        "usage": usage.json(),
    }))
    .into_response())
}

fn stream(
    state: Arc<AppState>,
    rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>,
    total: usize,
    n: usize,
    echo: Vec<String>,
    id: String,
    include_usage: bool,
) -> Response {
    let created = unix_now();
    let model = state.model.id.clone();
    let chunk = move |choices: Value, usage: Option<Value>| {
        let mut v = json!({
            "id": id, "object": "text_completion", "created": created,
            "model": model, "choices": choices,
        });
        if include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        sse_data(&v)
    };
    let mut first = String::new();
    for (i, e) in (0..total).map(|i| (i, &echo[i / n])) {
        if !e.is_empty() {
            first.push_str(&chunk(
                json!([{"index": i, "text": e, "logprobs": null, "finish_reason": null}]),
                None,
            ));
        }
    }
    let offsets = vec![0usize; total];
    let init = (rx, Some(first), total, Usage::default(), false, offsets);
    let s = futures_util::stream::unfold(
        init,
        move |(mut rx, first, mut left, mut usage, over, mut offsets)| {
            let chunk = chunk.clone();
            let state = state.clone();
            async move {
                if let Some(f) = first {
                    return Some((Ok(Bytes::from(f)), (rx, None, left, usage, over, offsets)));
                }
                if over {
                    return None;
                }
                let mut over = false;
                let out = match rx.recv().await {
                    None => {
                        over = true;
                        sse_data(&ApiError::internal("the scheduler stopped").body())
                    }
                    Some((i, ev)) => match &ev {
                        Event::Token { text, logprob, .. } => {
                            let lp = logprob.as_ref().map_or(Value::Null, |lp| {
                                let mut l = Logprobs::default();
                                l.push(&state, lp, offsets[i]);
                                l.json()
                            });
                            offsets[i] += text.len();
                            if text.is_empty() && lp.is_null() {
                                String::new()
                            } else {
                                chunk(
                                    json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}]),
                                    None,
                                )
                            }
                        }
                        Event::Done { text, finish, .. } => {
                            usage.add(i % n == 0, &ev);
                            let mut out = chunk(
                                json!([{"index": i, "text": text, "logprobs": null, "finish_reason": finish_name(finish)}]),
                                None,
                            );
                            left -= 1;
                            if left == 0 {
                                if include_usage {
                                    out.push_str(&chunk(json!([]), Some(usage.json())));
                                }
                                out.push_str("data: [DONE]\n\n");
                                over = true;
                            }
                            out
                        }
                        Event::Error(e) => {
                            over = true;
                            sse_data(&ApiError::internal(e.clone()).body())
                        }
                    },
                };
                Some((Ok(Bytes::from(out)), (rx, None, left, usage, over, offsets)))
            }
        },
    );
    output::sse_response(s)
}
