//! A test-only handler that answers like the versioned ones
//! (`{"version": "hoarder"}`) but whose linear memory starts at 16 MiB: a
//! host whose `INSTANCE_MEMORY_MB` is smaller cannot load it, which the
//! fleet tests use to make one replica of three fail a rollout.

use std::cell::UnsafeCell;

use petstore_guest::{ApiError, Request, Response};

/// 16 MiB of zeroes, in the component's initial memory (not in its file).
struct Hoard(UnsafeCell<[u8; 16 << 20]>);

// SAFETY: a component instance runs one request on one thread, and the
// hoard is only ever looked at, never written.
unsafe impl Sync for Hoard {}

static HOARD: Hoard = Hoard(UnsafeCell::new([0; 16 << 20]));

petstore_guest::handler!(route);

fn route(_req: &Request) -> Result<Response, ApiError> {
    std::hint::black_box(HOARD.0.get());
    Ok(Response::json(200, &serde_json::json!({ "version": "hoarder" })))
}
