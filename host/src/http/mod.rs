//! The HTTP edge: the public router and its middleware, composed in one
//! place, in a fixed order (outermost first):
//!
//! 1. request id: drop an invalid client id, set one if missing, echo it back;
//! 2. observe: one log line and the RED metrics per request;
//! 3. `X-API-Version` on every answer;
//! 4. CORS (answers preflights itself);
//! 5. catch panics → `500 internal` JSON, inside the layers above so that
//!    the answer to a host bug still carries the request id, the API version
//!    and CORS, and is logged and counted;
//! 6. routes: health, the OpenAPI document, and everything else to
//!    [`dispatch`], which hands `/api/v1/...` to a component.
//!
//! Beneath the router, [`connections`] accepts clients up to a cap and
//! closes the slow and the idle ones.

mod admin;
mod connections;
mod cors;
mod dispatch;
pub mod error;
mod health;
mod observe;
pub mod openapi;
mod request_id;
mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn_with_state, map_request};
use axum::routing::get;
use http::{HeaderName, HeaderValue};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::routing::RouteTable;
use crate::runtime::Runtime;
use crate::shutdown::ShutdownState;
use crate::storage::Database;
use crate::telemetry::Metrics;

pub use admin::{Admin, MetricsPort, admin_router, metrics_router};
pub use connections::{ConnectionLimits, serve};
pub use cors::CorsOrigins;
pub use throttle::Throttle;

/// The public port's body limit (the OpenAPI document): 64 KiB, counted as received.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the public router's handlers share.
pub struct App {
    pub runtime: Arc<Runtime>,
    /// For readiness: has the component registry been read?
    pub fleet: Arc<crate::fleet::Fleet>,
    /// For the health checks.
    pub database: Database,
    pub routes: Arc<RouteTable>,
    pub api_version: String,
    pub environment: &'static str,
    /// The OpenAPI document as served (with this deployment's settings).
    pub openapi: bytes::Bytes,
    /// How long a request's body may take to arrive (`BODY_TIMEOUT_MS`).
    pub body_timeout: std::time::Duration,
    /// Readiness answers 503 once shutdown has begun.
    pub shutdown: ShutdownState,
    pub metrics: Arc<Metrics>,
}

/// The public API's router with every edge layer.
pub fn public_router(app: Arc<App>, cors_origins: CorsOrigins) -> anyhow::Result<Router> {
    let api_version = HeaderValue::from_str(&app.api_version)?;
    let metrics = app.metrics.clone();
    let routes = Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/health/live", get(health::live))
        .route("/api/v1/health/ready", get(health::ready))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(|| async { error::HttpError::MethodNotAllowed("GET, HEAD") })
        .fallback(dispatch::dispatch)
        .with_state(app);
    Ok(with_edge(routes, api_version, metrics, cors_origins))
}

/// `routes` wrapped in the edge layers, in the order the module's doc lists.
fn with_edge(routes: Router, api_version: HeaderValue, metrics: Arc<Metrics>, cors_origins: CorsOrigins) -> Router {
    let edge = ServiceBuilder::new()
        .layer(map_request(request_id::drop_invalid))
        .layer(SetRequestIdLayer::new(request_id::X_REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id::X_REQUEST_ID))
        .layer(from_fn_with_state(metrics, observe::observe))
        .layer(SetResponseHeaderLayer::overriding(HeaderName::from_static("x-api-version"), api_version))
        .layer(from_fn_with_state(cors_origins, cors::cors))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            axum::response::IntoResponse::into_response(error::HttpError::Internal)
        }));
    routes.layer(edge)
}

/// The edge layers, tested without a socket: each request goes through
/// `oneshot` on a router whose one route answers 200 (or panics).
#[cfg(test)]
mod edge_tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    fn edge() -> Router {
        let routes = Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route("/panic", get(panics))
            .fallback(|| async { error::HttpError::NotFound });
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        with_edge(
            routes,
            HeaderValue::from_static("9.9.9"),
            metrics,
            CorsOrigins(vec!["https://shop.example".into()].into()),
        )
    }

    async fn panics() -> &'static str {
        panic!("a bug")
    }

    async fn send(req: Request<Body>) -> http::Response<Body> {
        edge().oneshot(req).await.expect("infallible")
    }

    fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut req = Request::get(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Body::empty()).expect("request")
    }

    fn header<'a>(resp: &'a http::Response<Body>, name: &str) -> Option<&'a str> {
        resp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_valid_request_id_is_echoed_and_an_invalid_one_replaced() {
        let kept = send(get_with("/ok", &[("x-request-id", "client-42")])).await;
        assert_eq!(header(&kept, "x-request-id"), Some("client-42"));
        let replaced = send(get_with("/ok", &[("x-request-id", &"x".repeat(129))])).await;
        let id = header(&replaced, "x-request-id").expect("a new id");
        assert!(id.len() == 36 && id != "x".repeat(129), "{id}");
        let made = send(get_with("/ok", &[])).await;
        assert_eq!(header(&made, "x-request-id").map(str::len), Some(36));
    }

    #[tokio::test]
    async fn every_answer_carries_the_api_version_even_errors() {
        for path in ["/ok", "/nowhere", "/panic"] {
            let resp = send(get_with(path, &[])).await;
            assert_eq!(header(&resp, "x-api-version"), Some("9.9.9"), "{path}");
        }
    }

    #[tokio::test]
    async fn a_panic_is_a_json_500() {
        let resp = send(get_with("/panic", &[])).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(header(&resp, "content-type").is_some_and(|c| c.starts_with("application/json")));
        assert!(header(&resp, "x-request-id").is_some(), "still correlated");
        assert_eq!(header(&resp, "x-api-version"), Some("9.9.9"));
    }

    #[tokio::test]
    async fn cors_answers_listed_origins_only() {
        let allowed = send(get_with("/ok", &[("origin", "https://shop.example")])).await;
        assert_eq!(header(&allowed, "access-control-allow-origin"), Some("https://shop.example"));
        assert!(header(&allowed, "vary").is_some_and(|v| v.eq_ignore_ascii_case("origin")));
        let other = send(get_with("/ok", &[("origin", "https://evil.example")])).await;
        assert!(other.headers().keys().all(|k| !k.as_str().starts_with("access-control-")));

        let preflight = |origin: &str| {
            Request::options("/ok")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .expect("request")
        };
        let allowed = send(preflight("https://shop.example")).await;
        assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
        assert!(header(&allowed, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
        let refused = send(preflight("https://evil.example")).await;
        assert!(refused.headers().keys().all(|k| !k.as_str().starts_with("access-control-")));
    }
}
