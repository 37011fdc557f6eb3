//! What chat and text completions share: request settings into scheduler requests, the
//! sink that carries each choice's events back, usage, and server-sent events.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use frugal_engine::generation::{FinishReason, StopCriteria};
use frugal_engine::sampling::SamplingParams;
use frugal_engine::scheduler::{Event, EventSink, Request, TokenLogprob};
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::api::Sampling;
use crate::error::ApiError;
use crate::AppState;

/// A request's generation settings, checked.
pub(crate) struct Settings {
    pub sampling: SamplingParams,
    pub stop: StopCriteria,
    pub stream: bool,
    pub include_usage: bool,
    pub n: usize,
}

/// Checks the shared fields and merges them over the model's defaults.
pub(crate) fn settings(state: &AppState, s: Sampling) -> Result<Settings, ApiError> {
    let n = s.n.unwrap_or(1) as usize;
    if n == 0 || n > state.options.max_choices {
        return Err(ApiError::bad_param(
            "n",
            format!("n must be between 1 and {}", state.options.max_choices),
        ));
    }
    let mut p = state.model.sampling.clone();
    if let Some(t) = s.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::bad_param(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        p.temperature = t;
        p.do_sample = t > 0.0;
    }
    if let Some(v) = s.top_p {
        if !(v > 0.0 && v <= 1.0) {
            return Err(ApiError::bad_param("top_p", "top_p must be in (0, 1]"));
        }
        p.top_p = v;
    }
    if let Some(v) = s.top_k {
        p.top_k = v as usize;
    }
    if let Some(v) = s.min_p {
        p.min_p = v;
    }
    if let Some(v) = s.repetition_penalty {
        p.repetition_penalty = v;
    }
    if let Some(seed) = s.seed {
        p.seed = Some(seed as u64);
    }
    p.validate()
        .map_err(|e| ApiError::bad_request(format!("sampling settings: {e}")))?;
    let stops = s.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stops.len() > 4 {
        return Err(ApiError::bad_param("stop", "at most 4 stop strings"));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::bad_param(
            "stop",
            "stop strings must not be empty",
        ));
    }
    let max_new = s.max_completion_tokens.or(s.max_tokens);
    if max_new == Some(0) {
        return Err(ApiError::bad_param(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    Ok(Settings {
        sampling: p,
        stop: StopCriteria {
            eos_token_ids: if s.ignore_eos.unwrap_or(false) {
                Vec::new()
            } else {
                state.model.eos_token_ids.clone()
            },
            max_new_tokens: max_new.map(|m| m as usize),
            stop_strings: stops,
        },
        stream: s.stream.unwrap_or(false),
        include_usage: s
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        n,
    })
}

/// Carries one choice's events to the response, tagged with its index.
struct ChoiceSink {
    index: usize,
    tx: UnboundedSender<(usize, Event)>,
}

impl EventSink for ChoiceSink {
    fn send(&mut self, event: Event) -> bool {
        self.tx.send((self.index, event)).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Submits `n` choices of each prompt (choice `p·n + i`; choice `i` samples with seed
/// `seed + i`). Dropping the receiver cancels them all.
pub(crate) fn submit(
    state: &AppState,
    prompts: &[Vec<u32>],
    settings: &Settings,
    logprobs: Option<usize>,
    skip_special_tokens: bool,
    json_object: bool,
) -> Result<UnboundedReceiver<(usize, Event)>, ApiError> {
    if prompts.len() * settings.n > state.options.max_choices {
        return Err(ApiError::bad_request(format!(
            "{} prompts × n = {} choices; at most {} per request",
            prompts.len(),
            prompts.len() * settings.n,
            state.options.max_choices
        )));
    }
    let (tx, rx) = unbounded_channel();
    for (p, prompt) in prompts.iter().enumerate() {
        for i in 0..settings.n {
            let mut sampling = settings.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
            state.handle.submit(Request {
                prompt: prompt.clone(),
                sampling,
                stop: settings.stop.clone(),
                logprobs,
                skip_special_tokens,
                json_object,
                sink: Box::new(ChoiceSink {
                    index: p * settings.n + i,
                    tx: tx.clone(),
                }),
            })?;
        }
    }
    Ok(rx)
}

/// Token counts of a response.
#[derive(Default)]
pub(crate) struct Usage {
    prompt: usize,
    completion: usize,
    cached: usize,
}

impl Usage {
    /// Adds a finished choice; its prompt counts once per prompt (for choice 0 of each).
    pub fn add(&mut self, first_of_prompt: bool, event: &Event) {
        if let Event::Done {
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            ..
        } = event
        {
            if first_of_prompt {
                self.prompt += prompt_tokens;
                self.cached += cached_tokens;
            }
            self.completion += completion_tokens;
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        })
    }
}

/// OpenAI's finish reasons.
pub(crate) fn finish_name(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// The text of a token for logprobs (lossy UTF-8 of its bytes) and the bytes.
pub(crate) fn token_text(state: &AppState, id: u32) -> (String, Vec<u8>) {
    let bytes = state.model.tokenizer.token_bytes(id).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Chat-style logprob entry of one token.
pub(crate) fn chat_logprob(state: &AppState, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, logprob: f32| {
        let (token, bytes) = token_text(state, id);
        json!({"token": token, "logprob": logprob, "bytes": bytes})
    };
    let mut v = entry(lp.id, lp.logprob);
    v["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
    v
}

/// One server-sent event carrying `value`.
pub(crate) fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// A streamed response of server-sent events.
pub(crate) fn sse_response(
    stream: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
