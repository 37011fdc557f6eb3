//! `GET /metrics`: Prometheus text exposition of the scheduler's counters and the HTTP
//! responses by route and status.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

pub(crate) async fn handle(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let s = state.handle.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP frugal_{name} {help}\n# TYPE frugal_{name} {kind}\nfrugal_{name} {value}"
        );
    };
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let lu = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as f64;
    metric(
        "requests_total",
        "counter",
        "Generation requests accepted (one per choice).",
        ld(&s.requests),
    );
    metric(
        "requests_finished_total",
        "counter",
        "Generation requests finished.",
        ld(&s.finished),
    );
    metric(
        "requests_cancelled_total",
        "counter",
        "Requests dropped because the client left.",
        ld(&s.cancelled),
    );
    metric(
        "requests_running",
        "gauge",
        "Sequences holding a slot.",
        lu(&s.active),
    );
    metric(
        "queue_depth",
        "gauge",
        "Requests waiting for a slot.",
        lu(&s.queued),
    );
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens run through the model.",
        ld(&s.prompt_tokens),
    );
    metric(
        "prompt_tokens_cached_total",
        "counter",
        "Prompt tokens reused from the prefix cache.",
        ld(&s.cached_tokens),
    );
    metric(
        "generated_tokens_total",
        "counter",
        "Tokens generated.",
        ld(&s.generated_tokens),
    );
    metric(
        "forward_passes_total",
        "counter",
        "Batched forward passes.",
        ld(&s.steps),
    );
    let busy = ld(&s.busy_micros) / 1e6;
    metric(
        "busy_seconds_total",
        "counter",
        "Time spent in forward passes.",
        busy,
    );
    metric(
        "tokens_per_second",
        "gauge",
        "Tokens (prompt and generated) per second of the last forward pass.",
        s.tokens_per_second(),
    );
    let gen_rate = if busy > 0.0 {
        ld(&s.generated_tokens) / busy
    } else {
        0.0
    };
    metric(
        "generation_tokens_per_busy_second",
        "gauge",
        "Generated tokens per second of forward-pass time, since start.",
        gen_rate,
    );
    let (used, total) = (lu(&s.kv_pages_used), lu(&s.kv_pages_total));
    metric(
        "kv_cache_pages_used",
        "gauge",
        "KV cache pages reserved by sequences or held by the prefix cache.",
        used,
    );
    metric(
        "kv_cache_pages_total",
        "gauge",
        "KV cache pages in the budget.",
        total,
    );
    metric(
        "kv_cache_usage_ratio",
        "gauge",
        "Share of the KV page budget in use.",
        if total > 0.0 { used / total } else { 0.0 },
    );
    let _ = writeln!(out, "# HELP frugal_http_responses_total HTTP responses by route and status.\n# TYPE frugal_http_responses_total counter");
    if let Ok(m) = state.responses.lock() {
        for ((route, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "frugal_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
