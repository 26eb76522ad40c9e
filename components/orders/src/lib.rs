//! The `orders` handler component: `/api/v1/orders` and `/api/v1/store/inventory`.
//!
//! Every rule that touches a pet and an order runs in one transaction, and
//! every state change is a conditional write (`UPDATE … WHERE status = …`,
//! `DELETE … WHERE status <> …`) whose row count says whether it won: never a
//! read followed by a write. So of concurrent changes to one pet or one
//! order exactly one wins, on SQLite and on PostgreSQL alike; a loser then
//! reads the winner's committed result to say why it lost (404 or 409).

use petstore_guest::db::{self, Db, Row, Sql, Value};
use petstore_guest::paging::{Page, PageBody};
use petstore_guest::validate::{self, Presence, Validator};
use petstore_guest::{ApiError, Handler, Request, Response, bindings, serve};
use serde::Serialize;

const ORDERS: &str = "/api/v1/orders";
const INVENTORY: &str = "/api/v1/store/inventory";
/// In the order a status may move: only forward.
const STATUSES: &[&str] = &["placed", "approved", "delivered"];
const COLUMNS: &str = "id, pet_id, quantity, status, created_at, updated_at";

struct Orders;

impl Handler for Orders {
    fn handle(
        req: bindings::exports::petstore::api::handler::Request,
    ) -> bindings::exports::petstore::api::handler::Response {
        serve(req, route)
    }
}

petstore_guest::export_handler!(Orders);

fn route(req: &Request) -> Result<Response, ApiError> {
    if let Some(segments) = req.segments_after(INVENTORY) {
        return match (segments.as_slice(), req.method.as_str()) {
            ([], "GET") => inventory(),
            ([], _) => Err(ApiError::MethodNotAllowed("GET")),
            _ => Err(ApiError::not_found("route")),
        };
    }
    let Some(segments) = req.segments_after(ORDERS) else {
        return Err(ApiError::not_found("route"));
    };
    match (segments.as_slice(), req.method.as_str()) {
        ([], "GET") => list(req),
        ([], "POST") => place(req),
        ([], _) => Err(ApiError::MethodNotAllowed("GET, POST")),
        ([id], method) => {
            let id = validate::path_id(id)?;
            match method {
                "GET" => get(id),
                "PATCH" => advance(req, id),
                "DELETE" => cancel(id),
                _ => Err(ApiError::MethodNotAllowed("GET, PATCH, DELETE")),
            }
        }
        _ => Err(ApiError::not_found("route")),
    }
}

#[derive(Serialize)]
struct Order {
    id: i64,
    /// `null` once a pet whose orders were all delivered has been deleted.
    pet_id: Option<i64>,
    quantity: i64,
    status: String,
    created_at: String,
    updated_at: String,
}

impl Order {
    fn from_row(row: &[Value]) -> Result<Order, ApiError> {
        let row = Row(row);
        Ok(Order {
            id: row.int(0)?,
            pet_id: row.opt_int(1)?,
            quantity: row.int(2)?,
            status: row.text(3)?,
            created_at: row.text(4)?,
            updated_at: row.text(5)?,
        })
    }
}

fn fetch(sql: &impl Sql, id: i64) -> Result<Option<Order>, ApiError> {
    let rows = sql.rows(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"), &[Value::Integer(id)])?;
    rows.rows.first().map(|r| Order::from_row(r)).transpose()
}

fn get(id: i64) -> Result<Response, ApiError> {
    let order = fetch(&Db, id)?.ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Response::json(200, &order))
}

fn list(req: &Request) -> Result<Response, ApiError> {
    let page = Page::from_request(req)?;
    let mut params = Vec::new();
    let mut filter = String::new();
    if let Some(status) = req.query("status")? {
        if !STATUSES.contains(&status) {
            return Err(ApiError::invalid_parameter("status", "must be one of: placed, approved, delivered"));
        }
        params.push(Value::Text(status.to_string()));
        filter = " WHERE status = $1".to_string();
    }
    let total = db::scalar_int(&Db.rows(&format!("SELECT COUNT(*) FROM orders{filter}"), &params)?)?;
    let n = params.len();
    params.push(Value::Integer(page.limit));
    params.push(Value::Integer(page.offset));
    let sql = format!("SELECT {COLUMNS} FROM orders{filter} ORDER BY id LIMIT ${} OFFSET ${}", n + 1, n + 2);
    let items = Db.rows(&sql, &params)?.rows.iter().map(|r| Order::from_row(r)).collect::<Result<Vec<_>, _>>()?;
    let link = page.next_link(req, items.len(), total);
    let resp = Response::json(200, &PageBody { items, total, limit: page.limit, offset: page.offset });
    Ok(match link {
        Some(link) => resp.header("link", link),
        None => resp,
    })
}

/// Place an order: the pet must exist (404) and be available (409); it
/// becomes `pending` in the same transaction. A new order is always `placed`.
fn place(req: &Request) -> Result<Response, ApiError> {
    let body = req.json_object()?;
    let mut v = Validator::new();
    let pet_id = v.integer(&body, "pet_id", (1, i64::MAX), Presence::Required);
    let quantity = v.integer(&body, "quantity", (1, 100), Presence::Optional);
    v.finish()?;
    let (Some(pet_id), quantity) = (pet_id, quantity.unwrap_or(1)) else { return Err(ApiError::Internal) };

    let now = petstore_guest::time::now_rfc3339();
    let tx = db::begin()?;
    let claimed = tx.run(
        "UPDATE pets SET status = 'pending', updated_at = $2 WHERE id = $1 AND status = 'available'",
        &[Value::Integer(pet_id), Value::Text(now.clone())],
    )?;
    if claimed == 0 {
        let pet = tx.rows("SELECT 1 FROM pets WHERE id = $1", &[Value::Integer(pet_id)])?;
        return Err(if pet.rows.is_empty() {
            ApiError::not_found("pet")
        } else {
            ApiError::Conflict("the pet is not available".into())
        });
    }
    let rows = tx.rows(
        &format!("INSERT INTO orders (pet_id, quantity, status, created_at, updated_at) VALUES ($1, $2, 'placed', $3, $3) RETURNING {COLUMNS}"),
        &[Value::Integer(pet_id), Value::Integer(quantity), Value::Text(now)],
    )?;
    let order = rows.rows.first().map(|r| Order::from_row(r)).transpose()?.ok_or(ApiError::Internal)?;
    db::commit(tx)?;
    Ok(Response::json(201, &order).header("location", format!("{ORDERS}/{}", order.id)))
}

/// Move an order forward (`placed` → `approved` → `delivered`, or straight to
/// `delivered`); delivering sells the pet in the same transaction.
fn advance(req: &Request, id: i64) -> Result<Response, ApiError> {
    let body = req.json_object()?;
    let mut v = Validator::new();
    let status = v.one_of(&body, "status", STATUSES, Presence::Required);
    v.finish()?;
    let Some(status) = status else { return Err(ApiError::Internal) };
    let earlier = &STATUSES[..rank(&status)];
    if earlier.is_empty() {
        // Nothing moves forward to the first status: only the reason differs.
        let order = fetch(&Db, id)?.ok_or_else(|| ApiError::not_found("order"))?;
        return Err(backwards(&order.status, &status));
    }

    let tx = db::begin()?;
    let now = petstore_guest::time::now_rfc3339();
    let mut params = vec![Value::Integer(id), Value::Text(status.clone()), Value::Text(now.clone())];
    params.extend(earlier.iter().map(|s| Value::Text(s.to_string())));
    let rows = tx.rows(
        &format!(
            "UPDATE orders SET status = $2, updated_at = $3 WHERE id = $1 AND status IN ({}) RETURNING {COLUMNS}",
            db::placeholders(4, earlier.len())
        ),
        &params,
    )?;
    let Some(updated) = rows.rows.first().map(|r| Order::from_row(r)).transpose()? else {
        // Lost: the order is gone, or already at or past `status`.
        let order = fetch(&tx, id)?.ok_or_else(|| ApiError::not_found("order"))?;
        return Err(backwards(&order.status, &status));
    };
    if status == "delivered"
        && let Some(pet_id) = updated.pet_id
    {
        tx.run(
            "UPDATE pets SET status = 'sold', updated_at = $2 WHERE id = $1",
            &[Value::Integer(pet_id), Value::Text(now)],
        )?;
    }
    db::commit(tx)?;
    Ok(Response::json(200, &updated))
}

fn backwards(from: &str, to: &str) -> ApiError {
    ApiError::Conflict(format!("an order cannot move from {from} to {to}"))
}

fn rank(status: &str) -> usize {
    STATUSES.iter().position(|s| *s == status).unwrap_or(0)
}

/// Cancel an order that is not delivered: it is removed and its pet is
/// available again, in one transaction.
fn cancel(id: i64) -> Result<Response, ApiError> {
    let tx = db::begin()?;
    let rows =
        tx.rows("DELETE FROM orders WHERE id = $1 AND status <> 'delivered' RETURNING pet_id", &[Value::Integer(id)])?;
    let Some(row) = rows.rows.first() else {
        // Lost: the order is gone (cancelled meanwhile) or delivered.
        return Err(match fetch(&tx, id)? {
            None => ApiError::not_found("order"),
            Some(_) => ApiError::Conflict("a delivered order cannot be cancelled".into()),
        });
    };
    if let Some(pet_id) = Row(row).opt_int(0)? {
        tx.run(
            "UPDATE pets SET status = 'available', updated_at = $2 WHERE id = $1",
            &[Value::Integer(pet_id), Value::Text(petstore_guest::time::now_rfc3339())],
        )?;
    }
    db::commit(tx)?;
    Ok(Response::empty(204))
}

#[derive(Serialize)]
struct Inventory {
    available: i64,
    pending: i64,
    sold: i64,
}

fn inventory() -> Result<Response, ApiError> {
    let rows = Db.rows("SELECT status, COUNT(*) FROM pets GROUP BY status", &[])?;
    let mut inv = Inventory { available: 0, pending: 0, sold: 0 };
    for row in &rows.rows {
        let row = Row(row);
        let count = row.int(1)?;
        match row.text(0)?.as_str() {
            "available" => inv.available = count,
            "pending" => inv.pending = count,
            "sold" => inv.sold = count,
            _ => {}
        }
    }
    Ok(Response::json(200, &inv))
}
