//! CORS for the origins in `CORS_ORIGINS`.
//!
//! Written here rather than taken from tower-http because the contract is
//! stricter than `CorsLayer`: that layer answers every `OPTIONS` as a
//! preflight with `200`, and sends `Access-Control-Allow-Methods` /
//! `-Headers` even to origins it does not allow. Here a preflight is `204`,
//! and an origin that is not listed gets no `Access-Control-*` header at all.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "content-type, authorization, x-request-id";
const EXPOSE_HEADERS: &str = "x-request-id, x-api-version, location, link, retry-after";
const MAX_AGE_SECONDS: &str = "600";

/// The allowed origins, compared exactly.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Arc<[String]>);

impl CorsOrigins {
    fn allows(&self, origin: &HeaderValue) -> bool {
        self.0.iter().any(|o| o.as_bytes() == origin.as_bytes())
    }
}

pub async fn cors(State(origins): State<CorsOrigins>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight = req.method() == Method::OPTIONS
        && origin.is_some()
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let allowed = origin.as_ref().filter(|o| origins.allows(o));

    let mut resp = if preflight {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if allowed.is_some() {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECONDS));
        }
        resp
    } else {
        let mut resp = next.run(req).await;
        if allowed.is_some() {
            resp.headers_mut().insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
        }
        resp
    };
    // The answer depends on Origin whenever any origin is configured.
    if !origins.0.is_empty() {
        resp.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(origin) = allowed {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    resp
}
