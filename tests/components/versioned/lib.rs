//! A test-only handler built twice, as `version-a` and `version-b`: each
//! answers `{"version": "<crate name>"}` (and sleeps on `?sleep_ms=`), so the
//! hot-swap and shutdown tests can tell which version answered and keep a
//! request in flight.

use petstore_guest::{ApiError, Request, Response};

petstore_guest::handler!(route);

fn route(req: &Request) -> Result<Response, ApiError> {
    if let Some(ms) = req.query("sleep_ms")?.and_then(|v| v.parse::<u64>().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(Response::json(200, &serde_json::json!({ "version": env!("CARGO_PKG_NAME") })))
}
