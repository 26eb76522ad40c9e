//! A test-only handler component that misbehaves on purpose, so the tests can
//! prove a trap, an endless loop or unbounded allocation stays inside its own
//! request (`/api/v1/misbehave/{trap,loop,alloc,counter}`), and that a
//! database constraint violation becomes a clean 409 (`…/constraint`).

use std::sync::atomic::{AtomicU64, Ordering};

use petstore_guest::db::{self, Row, Sql, Value};
use petstore_guest::{ApiError, Handler, Response, bindings, serve};

/// Lives as long as the instance: shows whether instances are shared.
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Misbehave;

impl Handler for Misbehave {
    fn handle(
        req: bindings::exports::petstore::api::handler::Request,
    ) -> bindings::exports::petstore::api::handler::Response {
        serve(req, |req| {
            let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
            match req.segments_after("/api/v1/misbehave").unwrap_or_default().as_slice() {
                ["trap"] => panic!("this component traps on purpose"),
                ["loop"] => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                ["alloc"] => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                ["counter"] => Ok(Response::json(200, &serde_json::json!({ "calls": calls }))),
                ["constraint"] => {
                    // A duplicate (pet_id, tag) breaks pet_tags' primary key.
                    let tx = db::begin()?;
                    let rows = tx.rows(
                        "INSERT INTO pets (name, species, tags, status, created_at, updated_at) \
                         VALUES ('c', 'c', '[]', 'available', 't', 't') RETURNING id",
                        &[],
                    )?;
                    let id = rows.rows.first().map(|r| Row(r).int(0)).transpose()?.ok_or(ApiError::Internal)?;
                    tx.run("INSERT INTO pet_tags (pet_id, tag) VALUES ($1, 'x'), ($1, 'x')", &[Value::Integer(id)])?;
                    db::commit(tx)?;
                    Ok(Response::empty(204))
                }
                _ => Err(ApiError::not_found("route")),
            }
        })
    }
}

petstore_guest::export_handler!(Misbehave);
