//! The admin port (never exposed publicly): the admin API behind
//! `ADMIN_TOKEN`: the fleet's components (what each live replica runs, the
//! stored versions), uploading a new version, and activating a stored one
//! (a rollback), each reaching every replica. And the metrics port's one
//! route, `/metrics`, on a listener of its own so that what scrapes it
//! never reaches the admin API.
//!
//! The token is checked on the headers, before any body is read; an address
//! that keeps failing is slowed (`throttle.rs`); a body must arrive within
//! `BODY_TIMEOUT_MS`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error::{HttpError, json_response};
use super::throttle::{DELAY, Throttle, Turn};
use crate::fleet::{ComponentStatus, Fleet, FleetError, signature_from_header};
use crate::routing::RouteTable;
use crate::runtime::{LoadedComponent, Origin, Runtime};
use crate::storage::Database;
use crate::telemetry::Metrics;

/// The largest component an upload accepts (ours are a few hundred KiB).
const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;
/// The largest body of the other admin calls.
const SMALL_LIMIT: usize = 4 * 1024;
/// Carries the upload's minisign signature, base64-encoded.
const SIGNATURE: &str = "x-component-signature";
/// Who uploads, as the registry records it (e.g. `pipeline@<commit>`).
const UPLOADED_BY: &str = "x-uploaded-by";

pub struct Admin {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) metrics: Arc<Metrics>,
    /// The admin API is off when this is `None`.
    pub(crate) token: Option<String>,
    /// How long an upload's body may take to arrive (`BODY_TIMEOUT_MS`).
    pub(crate) body_timeout: Duration,
    pub(crate) throttle: Throttle,
}

/// What the metrics port serves.
pub struct MetricsPort {
    pub metrics: Arc<Metrics>,
    /// For the pool's gauges.
    pub database: Database,
}

pub fn admin_router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin/components", get(list))
        .route("/admin/components/{name}", put(upload))
        .route("/admin/components/{name}/active", put(activate))
        .route("/admin/components/{name}/canary/{action}", post(decide_canary))
        .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed("GET, PUT, POST") })
        .fallback(|| async { HttpError::NotFound })
        .with_state(admin)
}

pub fn metrics_router(port: Arc<MetricsPort>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed("GET") })
        .fallback(|| async { HttpError::NotFound })
        .with_state(port)
}

async fn metrics(State(port): State<Arc<MetricsPort>>) -> Response {
    let (size, idle) = port.database.pool_stats();
    port.metrics.db_pool.with_label_values(&["idle"]).set(idle as i64);
    port.metrics.db_pool.with_label_values(&["in_use"]).set(i64::from(size) - idle as i64);
    let mut resp = port.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// `401` unless the request carries `Authorization: Bearer $ADMIN_TOKEN`
/// (compared in the same time however much of it matches). An address that
/// failed too often lately waits its turn first (`throttle.rs`).
async fn authorize(admin: &Admin, peer: SocketAddr, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(token) = &admin.token else { return Err(HttpError::AdminDisabled) };
    match admin.throttle.turn(peer.ip(), Instant::now()) {
        Turn::Now => {}
        Turn::Busy => {
            admin.metrics.admin_auth_failures.inc();
            return Err(HttpError::TooManyAttempts(DELAY.as_secs().max(1)));
        }
        Turn::After(delay) => {
            let _turn = admin.throttle.waiting(peer.ip());
            tokio::time::sleep(delay).await;
        }
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        return Ok(());
    }
    admin.throttle.failed(peer.ip(), Instant::now());
    admin.metrics.admin_auth_failures.inc();
    tracing::warn!(client = %peer.ip(), "admin call with a missing or wrong token");
    Err(HttpError::Unauthorized)
}

/// Every routed component: what this replica serves, what the registry
/// wants, what each live replica runs, and the stored versions.
async fn list(State(admin): State<Arc<Admin>>, _: Authorized<SMALL_LIMIT>) -> Result<Response, HttpError> {
    let statuses = admin.fleet.status().await.map_err(fleet_error)?;
    let components: Vec<_> = statuses
        .iter()
        .filter_map(|status| {
            admin.runtime.component(&status.name).map(|loaded| describe(&admin, &loaded, Some(status)))
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "replica": admin.fleet.replica(), "components": components })))
}

/// Upload a new version: it reaches every replica. Requests already
/// running finish on the old version.
async fn upload(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    Authorized { parts, body }: Authorized<UPLOAD_LIMIT>,
) -> Result<Response, HttpError> {
    let canary = canary_percent(parts.uri.query())?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let signature = header(SIGNATURE)
        .map(signature_from_header)
        .transpose()
        .map_err(|e| HttpError::SignatureRejected(e.to_string()))?;
    let uploaded_by = header(UPLOADED_BY).filter(|v| (1..=100).contains(&v.len())).unwrap_or("admin token");
    let loaded =
        admin.fleet.publish(&name, body.to_vec(), signature, uploaded_by, canary).await.map_err(fleet_error)?;
    let mut described = describe(&admin, &loaded, None);
    if let Some(percent) = canary {
        described["canary"] = json!({ "percent": percent, "state": "running" });
    }
    Ok(json_response(StatusCode::OK, &described))
}

/// `?canary=PERCENT` (1–99), when given.
fn canary_percent(query: Option<&str>) -> Result<Option<u8>, HttpError> {
    let invalid =
        |value: &str| HttpError::BadParameter(format!("canary must be a percent from 1 to 99, not {value:?}"));
    let Some(value) = query.unwrap_or_default().split('&').find_map(|pair| pair.strip_prefix("canary=")) else {
        return Ok(None);
    };
    match value.parse::<u8>() {
        Ok(percent @ 1..=99) => Ok(Some(percent)),
        _ => Err(invalid(value)),
    }
}

/// `promote`: make the running canary of `name` the active version
/// everywhere, now; `abort`: end it everywhere, now.
async fn decide_canary(
    State(admin): State<Arc<Admin>>,
    Path((name, action)): Path<(String, String)>,
    _: Authorized<SMALL_LIMIT>,
) -> Result<Response, HttpError> {
    let decided = match action.as_str() {
        "promote" => admin.fleet.promote_canary(&name).await,
        "abort" => admin.fleet.abort_canary(&name).await,
        _ => return Err(HttpError::NotFound),
    };
    decided.map_err(fleet_error)?;
    canary_answer(&admin, &name).await
}

/// The component `name` as the list describes it.
async fn canary_answer(admin: &Admin, name: &str) -> Result<Response, HttpError> {
    let statuses = admin.fleet.status().await.map_err(fleet_error)?;
    let status = statuses.iter().find(|s| s.name == name).ok_or(HttpError::NotFound)?;
    let loaded = admin.runtime.component(name).ok_or(HttpError::NotFound)?;
    Ok(json_response(StatusCode::OK, &describe(admin, &loaded, Some(status))))
}

/// `{"digest": "sha256:…"}`: make that stored version active everywhere.
async fn activate(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    Authorized { body, .. }: Authorized<SMALL_LIMIT>,
) -> Result<Response, HttpError> {
    let digest = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["digest"].as_str().map(|d| d.trim_start_matches("sha256:").to_string()))
        .ok_or_else(|| HttpError::ComponentRejected("send {\"digest\": \"sha256:…\"}".into()))?;
    let loaded = admin.fleet.activate(&name, &digest).await.map_err(fleet_error)?;
    Ok(json_response(StatusCode::OK, &describe(&admin, &loaded, None)))
}

/// A request whose token is right, with its body: at most `LIMIT` bytes,
/// read within the body timeout. The token is checked on the head before a
/// byte of the body is read: an unauthenticated client costs no memory
/// (the answer closes the connection, body unread).
struct Authorized<const LIMIT: usize> {
    parts: http::request::Parts,
    body: bytes::Bytes,
}

impl<const LIMIT: usize> FromRequest<Arc<Admin>> for Authorized<LIMIT> {
    type Rejection = HttpError;

    async fn from_request(req: Request, admin: &Arc<Admin>) -> Result<Self, HttpError> {
        let (parts, body) = req.into_parts();
        // The admin listener always serves with the peer's address.
        let ConnectInfo(peer) = *parts.extensions.get::<ConnectInfo<SocketAddr>>().ok_or(HttpError::Internal)?;
        authorize(admin, peer, &parts.headers).await?;
        let body = tokio::time::timeout(admin.body_timeout, to_bytes(body, LIMIT))
            .await
            .map_err(|_| HttpError::RequestTimeout(admin.body_timeout.as_millis()))?
            .map_err(|_| HttpError::PayloadTooLarge(LIMIT))?;
        Ok(Authorized { parts, body })
    }
}

fn fleet_error(err: FleetError) -> HttpError {
    match err {
        FleetError::Unknown(_) | FleetError::NoSuchVersion { .. } => HttpError::NotFound,
        FleetError::Signature(err) => HttpError::SignatureRejected(err.to_string()),
        FleetError::Stale(err) => HttpError::VersionConflict(err.to_string()),
        FleetError::Canary(err) => HttpError::CanaryConflict(err.to_string()),
        FleetError::Refused(reason) => HttpError::ComponentRejected(reason),
        FleetError::Database(err) => {
            tracing::warn!(error = %err, "the component registry is unavailable");
            HttpError::Unavailable
        }
    }
}

fn describe(admin: &Admin, c: &LoadedComponent, status: Option<&ComponentStatus>) -> serde_json::Value {
    let routes: Vec<&str> =
        admin.routes.routes().iter().filter(|r| *r.component == *c.name).map(|r| r.prefix.as_str()).collect();
    let sha = |digest: &str| format!("sha256:{digest}");
    let mut described = json!({
        "name": &*c.name,
        "routes": routes,
        "digest": sha(&c.digest),
        "loaded_at": humantime::format_rfc3339_seconds(c.loaded_at).to_string(),
        "precompiled": c.origin == Origin::Precompiled,
    });
    if let Some(status) = status {
        described["desired"] = json!(status.desired.as_deref().map(sha));
        described["converged"] = json!(status.converged);
        described["replicas"] = status
            .replicas
            .iter()
            .map(|r| {
                json!({
                    "replica": r.replica,
                    "digest": sha(&r.digest),
                    "target": sha(&r.target),
                    "state": r.state,
                    "reason": r.reason,
                    "heartbeat_at": humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.heartbeat_ms.max(0) as u64)
                    ).to_string(),
                })
            })
            .collect();
        described["versions"] = status
            .versions
            .iter()
            .map(|v| {
                json!({
                    "digest": sha(&v.digest),
                    "size": v.size,
                    "uploaded_at": v.uploaded_at,
                    "uploaded_by": v.uploaded_by,
                    "signed": v.signed,
                    "version": v.version,
                    "active": status.desired.as_deref() == Some(v.digest.as_str()),
                })
            })
            .collect();
        described["canary"] = json!(status.canary.as_ref().map(|c| {
            let at = |ms: i64| {
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
                )
                .to_string()
            };
            json!({
                "digest": sha(&c.digest),
                "percent": c.percent,
                "state": c.state,
                "reason": c.reason,
                "started_at": at(c.started_ms),
                "decided_at": c.decided_ms.map(at),
                "requests": c.requests,
                "errors": c.errors,
                "slow": c.slow,
            })
        }));
    }
    described
}
