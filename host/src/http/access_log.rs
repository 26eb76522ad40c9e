//! One JSON log line per request: request id, method, route, status,
//! latency and the component that answered.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::request_id::X_REQUEST_ID;

/// Set on a response by whoever answered it: the route template (bounded
/// cardinality, unlike the path) and the component, if one ran.
#[derive(Debug, Clone)]
pub struct Answered {
    pub route: String,
    pub component: Option<std::sync::Arc<str>>,
}

pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let resp = next.run(req).await;
    let answered = resp.extensions().get::<Answered>();
    tracing::info!(
        target: "access",
        request_id,
        method = %method,
        path,
        route = answered.map(|a| a.route.as_str()).unwrap_or("unmatched"),
        component = answered.and_then(|a| a.component.as_deref()).unwrap_or(""),
        status = resp.status().as_u16(),
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}
