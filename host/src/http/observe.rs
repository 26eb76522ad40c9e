//! One JSON log line, the RED metrics and the edge's trace span per request:
//! request id, trace id, method, route, status, latency and the component
//! that answered.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;

use tracing::Instrument;
use tracing::field::Empty;

use super::error;
use super::request_id::X_REQUEST_ID;
use crate::telemetry::{Metrics, traces};

/// Set on a response by whoever answered it: the route template (bounded
/// cardinality, unlike the path) and the component, if one ran.
#[derive(Debug, Clone)]
pub struct Answered {
    pub route: String,
    pub component: Option<Arc<str>>,
}

/// Counts a request in flight while it lives; one dropped before its answer
/// was made (the client went away, or shutdown cut it) counts as abandoned.
struct InFlight {
    metrics: Arc<Metrics>,
    answered: bool,
}

impl InFlight {
    fn start(metrics: Arc<Metrics>) -> InFlight {
        metrics.http_in_flight.inc();
        InFlight { metrics, answered: false }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.http_in_flight.dec();
        if !self.answered {
            self.metrics.http_abandoned.inc();
        }
    }
}

pub async fn observe(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let mut in_flight = InFlight::start(metrics.clone());
    let start = Instant::now();
    let method = method_label(req.method());
    let path = req.uri().path().to_owned();
    let request_id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    // The edge's span: the root of this request's trace, or the child of the
    // client's (traceparent); named by the route once it is known.
    let span = tracing::info_span!(
        target: traces::TARGET,
        "request",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        url.path = %path,
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = %request_id,
    );
    traces::continue_trace(&span, req.headers());
    let resp = next.run(req).instrument(span.clone()).await;
    in_flight.answered = true;
    let elapsed = start.elapsed().as_secs_f64();
    let answered = resp.extensions().get::<Answered>();
    let route = answered.map(|a| a.route.as_str()).unwrap_or("unmatched");
    let status = resp.status();

    let status_label = status.as_str();
    metrics.http_requests.with_label_values(&[route, method, status_label]).inc();
    metrics.http_duration.with_label_values(&[route, method]).observe(elapsed);
    if status.is_server_error() {
        metrics.http_errors.with_label_values(&[route, method, status_label]).inc();
    }
    if !span.is_disabled() {
        traces::rename(&span, format!("{method} {route}"));
        span.record("http.route", route);
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    let trace_id = traces::trace_id(&span);
    tracing::info!(
        target: "access",
        request_id,
        trace_id,
        method,
        path,
        route,
        component = answered.and_then(|a| a.component.as_deref()).unwrap_or(""),
        status = status.as_u16(),
        latency_ms = elapsed * 1000.0,
        "request"
    );
    error::with_context(resp, &request_id, trace_id).await
}

/// Known methods by name; anything else as `other`, so a client cannot
/// grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
