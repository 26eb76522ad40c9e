//! A test-only handler that fails every request with a 500, as a broken
//! release would: the canary tests upload it as a canary of `versioned`
//! and expect the fleet to roll it back by itself.

use petstore_guest::{ApiError, Request, Response};

petstore_guest::handler!(route);

fn route(_req: &Request) -> Result<Response, ApiError> {
    Ok(Response::json(500, &serde_json::json!({ "version": "failing", "error": "this version fails every request" })))
}
