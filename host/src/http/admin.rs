//! The admin port (never exposed publicly): Prometheus metrics, and the
//! admin API (list components, hot-swap one) behind `ADMIN_TOKEN`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::{HttpError, json_response};
use crate::routing::RouteTable;
use crate::runtime::{LoadedComponent, Runtime, SwapError};
use crate::storage::Database;
use crate::telemetry::Metrics;

/// The largest component a swap accepts (ours are a few MiB).
const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

pub struct Admin {
    pub runtime: Arc<Runtime>,
    /// For the pool's gauges.
    pub database: Database,
    pub routes: Arc<RouteTable>,
    pub metrics: Arc<Metrics>,
    /// The admin API is off when this is `None`; `/metrics` is always on.
    pub token: Option<String>,
}

pub fn admin_router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/components", get(list))
        .route("/admin/components/{name}", put(swap))
        .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed("GET, PUT") })
        .fallback(|| async { HttpError::NotFound })
        .with_state(admin)
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let (size, idle) = admin.database.pool_stats();
    admin.metrics.db_pool.with_label_values(&["idle"]).set(idle as i64);
    admin.metrics.db_pool.with_label_values(&["in_use"]).set(i64::from(size) - idle as i64);
    let mut resp = admin.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `401` unless the request carries `Authorization: Bearer $ADMIN_TOKEN`;
/// the comparison takes the same time however much of the token matches.
fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(token) = &admin.token else { return Err(HttpError::AdminDisabled) };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) { Ok(()) } else { Err(HttpError::Unauthorized) }
}

async fn list(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, HttpError> {
    authorize(&admin, &headers)?;
    let components: Vec<_> = admin.runtime.components().iter().map(|c| describe(&admin, c)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "components": components })))
}

/// Compile and check the uploaded component, then swap it in atomically.
/// Requests already running finish on the old version.
async fn swap(State(admin): State<Arc<Admin>>, Path(name): Path<String>, req: Request) -> Result<Response, HttpError> {
    let (parts, body) = req.into_parts();
    // Read the upload before refusing anything: a client still sending its
    // body would see a reset connection instead of the answer.
    let bytes = read_upload(body).await?;
    authorize(&admin, &parts.headers)?;
    if admin.runtime.component(&name).is_none() {
        return Err(HttpError::NotFound);
    }
    let runtime = admin.runtime.clone();
    let swapped = tokio::task::spawn_blocking(move || runtime.replace(&name, &bytes)).await.map_err(|err| {
        tracing::error!(error = %err, "swap task failed");
        HttpError::Internal
    })?;
    match swapped {
        Ok(loaded) => Ok(json_response(StatusCode::OK, &describe(&admin, &loaded))),
        Err(SwapError::Unknown(_)) => Err(HttpError::NotFound),
        Err(SwapError::Load(err)) => Err(HttpError::ComponentRejected(err.to_string())),
    }
}

async fn read_upload(body: Body) -> Result<bytes::Bytes, HttpError> {
    to_bytes(body, UPLOAD_LIMIT).await.map_err(|_| HttpError::PayloadTooLarge(UPLOAD_LIMIT))
}

fn describe(admin: &Admin, c: &LoadedComponent) -> serde_json::Value {
    let routes: Vec<&str> =
        admin.routes.routes().iter().filter(|r| *r.component == *c.name).map(|r| r.prefix.as_str()).collect();
    json!({
        "name": &*c.name,
        "routes": routes,
        "digest": format!("sha256:{}", c.digest),
        "loaded_at": humantime::format_rfc3339_seconds(c.loaded_at).to_string(),
        "precompiled": c.origin == crate::runtime::Origin::Precompiled,
    })
}
