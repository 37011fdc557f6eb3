//! # frugal-server
//!
//! An OpenAI-compatible HTTP server over the engine's continuous-batching scheduler
//! ([`frugal_engine::scheduler`]): `/v1/chat/completions` (SSE streaming, `reasoning_content`
//! split from `content` as DeepSeek's API does, tool calls), `/v1/completions`, `/v1/models`,
//! `/health`, `/metrics` (Prometheus text) and a small chat page at `/`.
//!
//! The server is thin: it checks and translates requests, renders chat templates, tokenizes,
//! and turns the scheduler's token events into OpenAI's JSON. Every bad request gets an
//! OpenAI-style error (`error.rs`) and never reaches the model.
#![deny(missing_docs)]

pub mod api;
mod chat;
mod completions;
pub mod error;
mod metrics;
mod output;
pub mod tools;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use frugal_engine::chat_template::ChatTemplate;
use frugal_engine::reasoning::ReasoningStyle;
use frugal_engine::sampling::SamplingParams;
use frugal_engine::scheduler::Handle;
use frugal_engine::tokenizer::Tokenizer;
use serde::de::DeserializeOwned;

use error::ApiError;
use tools::ToolFormat;

/// The chat page served at `/`: one file, no build step, no external resources.
const PAGE: &str = include_str!("page.html");

/// What the server knows about the model it serves.
pub struct ModelInfo {
    /// The id `/v1/models` lists (and responses name).
    pub id: String,
    /// Its tokenizer.
    pub tokenizer: &'static Tokenizer,
    /// Its chat template, if any (chat completions need one).
    pub template: Option<&'static ChatTemplate>,
    /// Whether it writes `<think>` blocks.
    pub style: ReasoningStyle,
    /// How it marks tool calls.
    pub tool_format: ToolFormat,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Sampling defaults (the model's generation_config.json), under a request's settings.
    pub sampling: SamplingParams,
}

/// Server settings besides the model.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Require `Authorization: Bearer KEY` on the API.
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Most choices (`n` times prompts) in one request.
    pub max_choices: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_key: None,
            body_limit: 4 << 20,
            max_choices: 16,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    /// Submits to the scheduler.
    pub handle: Handle,
    /// The model.
    pub model: ModelInfo,
    /// Settings.
    pub options: ServerOptions,
    /// Responses by (route, status), for `/metrics`.
    responses: Mutex<BTreeMap<(String, u16), u64>>,
    /// Unix time at start (the `created` of `/v1/models`).
    created: u64,
    /// Ids of responses.
    next_id: AtomicU64,
}

impl AppState {
    /// State for a server over `handle`.
    pub fn new(handle: Handle, model: ModelInfo, options: ServerOptions) -> Arc<Self> {
        Arc::new(AppState {
            handle,
            model,
            options,
            responses: Mutex::new(BTreeMap::new()),
            created: unix_now(),
            next_id: AtomicU64::new(1),
        })
    }

    /// A fresh response id with `prefix` (`chatcmpl`, `cmpl`).
    fn response_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.created)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// All routes. The API (`/v1/…`, `/metrics`) needs the key when one is set; `/` and
/// `/health` do not.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/metrics", get(metrics::handle))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(api)
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async {
            let mut e = ApiError::bad_request("method not allowed on this route").into_response();
            *e.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            e
        })
        .layer(DefaultBodyLimit::max(state.options.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compare without an early exit, so timing does not tell how much matched.
        let ok = given.is_some_and(|g| {
            g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // A declared length over the limit is refused before reading (the body extractor alone
    // would wait for the bytes first).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = declared.is_some_and(|n| n > state.options.body_limit as u64);
    let route = match req.uri().path() {
        p @ ("/"
        | "/health"
        | "/metrics"
        | "/v1/chat/completions"
        | "/v1/completions"
        | "/v1/models") => p.to_owned(),
        p if p.starts_with("/v1/models/") => "/v1/models/{id}".to_owned(),
        _ => "other".to_owned(),
    };
    let mut resp = if too_large {
        ApiError::too_large(state.options.body_limit).into_response()
    } else {
        next.run(req).await
    };
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is left unread, so the connection cannot carry another
        // request: say so, or a keep-alive client sends its next request on a connection
        // that is about to close and sees it drop without an answer.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(mut m) = state.responses.lock() {
        *m.entry((route, resp.status().as_u16())).or_default() += 1;
    }
    resp
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "object": "list",
        "data": [model_json(&state)],
    }))
}

async fn model(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if id == state.model.id {
        Ok(Json(model_json(&state)))
    } else {
        Err(ApiError::not_found(&format!("model {id:?}")))
    }
}

fn model_json(state: &AppState) -> serde_json::Value {
    serde_json::json!({
        "id": state.model.id,
        "object": "model",
        "created": state.created,
        "owned_by": "frugal",
        "max_model_len": state.handle.config().ctx_size,
    })
}

/// The body, or 413 when over the limit.
fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.options.body_limit)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

/// Parses a JSON body into `T`; errors name the field (`temperature: invalid type: …`).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid request: {inner}"))
        } else {
            ApiError::bad_param(&path, format!("{path}: {inner}"))
        }
    })
}
