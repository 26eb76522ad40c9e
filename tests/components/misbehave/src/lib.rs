//! A test-only handler component that misbehaves on purpose, so the tests can
//! prove a trap, an endless loop or unbounded allocation stays inside its own
//! request (`/api/v1/misbehave/{trap,loop,alloc,counter}`), that a database
//! constraint violation becomes a clean 409 (`…/constraint`), how every
//! other class of database error is answered, and that SQL reaching beyond
//! its tables is refused: `POST …/sql` runs the statements it is given (any
//! SQL: it is the attacker's tool), in one transaction or one by one. And
//! `…/large-error` answers a 422 too large for the edge to add its request
//! context to.

use std::sync::atomic::{AtomicU64, Ordering};

use petstore_guest::bindings::petstore::api::database::{self, Error, Transaction};
use petstore_guest::db::{self, Sql, Value};
use petstore_guest::{ApiError, Request, Response};

/// Lives as long as the instance: shows whether instances are shared.
static CALLS: AtomicU64 = AtomicU64::new(0);

petstore_guest::handler!(route);

fn route(req: &Request) -> Result<Response, ApiError> {
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
            let id: i64 = tx.one(
                "INSERT INTO pets (name, species, tags, status, created_at, updated_at) \
                 VALUES ('c', 'c', '[]', 'available', 't', 't') RETURNING id",
                &[],
            )?;
            tx.run("INSERT INTO pet_tags (pet_id, tag) VALUES ($1, 'x'), ($1, 'x')", &[Value::Integer(id)])?;
            db::commit(tx)?;
            Ok(Response::empty(204))
        }
        ["sql"] => run_sql(req),
        // An error answer larger than any the host rewrites.
        ["large-error"] => Ok(Response::json(
            422,
            &serde_json::json!({ "error": { "code": "validation_failed", "message": "x".repeat(70_000) } }),
        )),
        _ => Err(ApiError::not_found("route")),
    }
}

/// `{"statements": [{"sql": "…", "params": [1, "a", null], "query": true}, …], "transaction": true}`:
/// run each statement (inside one transaction when asked; `query` for one
/// that returns rows) and answer `{"affected": [n, …], "rows": [[…], …]}`
/// (the rows of the last query). The first failure answers as a handler's
/// database error would, plus `X-Db-Error: KIND` naming the host's class
/// of it (`forbidden`, `busy`, …) for the tests to read.
fn run_sql(req: &Request) -> Result<Response, ApiError> {
    let body = req.json_object()?;
    let statements = body.get("statements").and_then(|s| s.as_array()).cloned().unwrap_or_default();
    let in_transaction = body.get("transaction").and_then(|t| t.as_bool()).unwrap_or(false);
    let outcome = (|| {
        let tx = if in_transaction { Some(Transaction::begin()?) } else { None };
        let (mut affected, mut rows) = (Vec::new(), Vec::new());
        for statement in &statements {
            let sql = statement.get("sql").and_then(|s| s.as_str()).unwrap_or_default();
            let params: Vec<Value> = statement
                .get("params")
                .and_then(|p| p.as_array())
                .map(|params| params.iter().map(to_value).collect())
                .unwrap_or_default();
            if statement.get("query").and_then(|q| q.as_bool()).unwrap_or(false) {
                let found = match &tx {
                    Some(tx) => tx.query(sql, &params)?,
                    None => database::query(sql, &params)?,
                };
                rows = found.rows.iter().map(|row| row.iter().map(to_json).collect::<Vec<_>>()).collect();
                affected.push(found.rows.len() as u64);
            } else {
                affected.push(match &tx {
                    Some(tx) => tx.execute(sql, &params)?,
                    None => database::execute(sql, &params)?,
                });
            }
        }
        if let Some(tx) = tx {
            Transaction::commit(tx)?;
        }
        Ok::<_, Error>((affected, rows))
    })();
    match outcome {
        Ok((affected, rows)) => Ok(Response::json(200, &serde_json::json!({ "affected": affected, "rows": rows }))),
        Err(err) => {
            let kind = match &err {
                Error::ConstraintViolation(_) => "constraint-violation",
                Error::InvalidData(_) => "invalid-data",
                Error::Busy(_) => "busy",
                Error::Unavailable(_) => "unavailable",
                Error::Forbidden(_) => "forbidden",
                Error::Other(_) => "other",
            };
            Ok(Response::from(db::into_api_error(err)).header("x-db-error", kind))
        }
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => (*n).into(),
        Value::Real(f) => (*f).into(),
        Value::Text(s) => s.clone().into(),
        Value::Blob(b) => format!("{} bytes", b.len()).into(),
        Value::Boolean(b) => (*b).into(),
    }
}

fn to_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}
