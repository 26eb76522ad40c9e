//! The HTTP edge: the public router and its middleware, composed in one
//! place, in a fixed order (outermost first):
//!
//! 1. catch panics → `500 internal` JSON, so a host bug never drops a connection;
//! 2. request id: drop an invalid client id, set one if missing, echo it back;
//! 3. observe: one log line and the RED metrics per request;
//! 4. `X-API-Version` on every answer;
//! 5. CORS (answers preflights itself);
//! 6. routes: health, the OpenAPI document, and everything else to
//!    [`dispatch`], which hands `/api/v1/...` to a component.

mod admin;
mod connections;
mod cors;
mod dispatch;
pub mod error;
mod health;
mod observe;
pub mod openapi;
mod request_id;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

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
use crate::telemetry::Metrics;

pub use admin::{Admin, admin_router};
pub use connections::{ConnectionLimits, serve};
pub use cors::CorsOrigins;

/// The public port's body limit (API.md): 64 KiB, counted as received.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the public router's handlers share.
pub struct App {
    pub runtime: Arc<Runtime>,
    pub routes: Arc<RouteTable>,
    pub api_version: String,
    pub environment: &'static str,
    /// The OpenAPI document as served (with this deployment's settings).
    pub openapi: bytes::Bytes,
    /// How long a request's body may take to arrive (`BODY_TIMEOUT_MS`).
    pub body_timeout: std::time::Duration,
    /// Set when shutdown begins: readiness answers 503 from then on.
    pub draining: Arc<AtomicBool>,
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
        .route("/api/v1/openapi.json", get(health::openapi))
        .method_not_allowed_fallback(|| async { error::ApiError::MethodNotAllowed("GET, HEAD") })
        .fallback(dispatch::dispatch)
        .with_state(app);

    let edge = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            axum::response::IntoResponse::into_response(error::ApiError::Internal)
        }))
        .layer(map_request(request_id::drop_invalid))
        .layer(SetRequestIdLayer::new(request_id::X_REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(request_id::X_REQUEST_ID))
        .layer(from_fn_with_state(metrics, observe::observe))
        .layer(SetResponseHeaderLayer::overriding(HeaderName::from_static("x-api-version"), api_version))
        .layer(from_fn_with_state(cors_origins, cors::cors));
    Ok(routes.layer(edge))
}
