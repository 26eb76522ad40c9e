//! The health endpoints: liveness, readiness and health, answered by the
//! host itself.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use serde_json::json;

use super::App;
use super::error::json_response;
use super::observe::Answered;

/// A readiness probe must answer well inside the kubelet's timeout.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// `200` while the process can serve at all; never touches the database.
pub async fn live() -> Response {
    answered(json_response(StatusCode::OK, &json!({ "status": "ok" })), "/api/v1/health/live")
}

/// `200` when the database answers and every routed component is loaded;
/// `503` otherwise and while draining.
pub async fn ready(State(app): State<Arc<App>>) -> Response {
    let checks = Checks::run(&app).await;
    let ok = checks.ok() && !app.shutdown.is_draining();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if ok { "ok" } else { "unavailable" }, "checks": checks.json() });
    answered(json_response(status, &body), "/api/v1/health/ready")
}

pub async fn health(State(app): State<Arc<App>>) -> Response {
    let checks = Checks::run(&app).await;
    let status = if checks.ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if checks.ok() { "ok" } else { "unavailable" },
        "version": app.api_version,
        "environment": app.environment,
        "checks": checks.json(),
    });
    answered(json_response(status, &body), "/api/v1/health")
}

struct Checks {
    database: bool,
    components: bool,
}

impl Checks {
    async fn run(app: &App) -> Checks {
        let ping = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, app.database.ping()).await;
        let database = matches!(ping, Ok(Ok(())));
        // Every routed component is loaded, and the versions the registry
        // wants have been looked for (a restarted replica serves them, not
        // its image's, from its first ready answer).
        let components =
            app.fleet.is_synced() && app.routes.routes().iter().all(|r| app.runtime.component(&r.component).is_some());
        Checks { database, components }
    }

    fn ok(&self) -> bool {
        self.database && self.components
    }

    fn json(&self) -> serde_json::Value {
        let word = |ok: bool| if ok { "ok" } else { "error" };
        json!({ "database": word(self.database), "components": word(self.components) })
    }
}

/// `resp`, marked as answered by the host on `route` (for the access log and metrics).
pub(super) fn answered(mut resp: Response, route: &str) -> Response {
    resp.extensions_mut().insert(Answered { route: route.to_string(), component: None });
    resp
}
