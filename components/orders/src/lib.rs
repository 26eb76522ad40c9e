//! The `orders` handler component: `/api/v1/orders` and `/api/v1/store/inventory`.
//!
//! Every rule that touches a pet and an order runs in one transaction, and
//! every state change is a conditional write (`UPDATE … WHERE status = …`,
//! `DELETE … WHERE status <> …`) whose row count says whether it won: never a
//! read followed by a write. So of concurrent changes to one pet or one
//! order exactly one wins, on SQLite and on PostgreSQL alike; a loser then
//! reads the winner's committed result to say why it lost (404 or 409).

use petstore_guest::Target::{Collection, Member};
use petstore_guest::db::{self, Db, FromRow, Row, Sql, Value};
use petstore_guest::model::{DEFAULT_QUANTITY, ORDER_STATUSES, Order, OrderStatus, PetStatus, QUANTITY};
use petstore_guest::paging::{self, Filters};
use petstore_guest::records::ORDER_COLUMNS;
use petstore_guest::validate::{Presence, Validator};
use petstore_guest::{ApiError, Request, Response};
use serde::Serialize;

const ORDERS: &str = "/api/v1/orders";
const INVENTORY: &str = "/api/v1/store/inventory";

petstore_guest::handler!(route);

fn route(req: &Request) -> Result<Response, ApiError> {
    if let Some(segments) = req.segments_after(INVENTORY) {
        return match (segments.as_slice(), req.method.as_str()) {
            ([], "GET") => inventory(),
            ([], _) => Err(ApiError::MethodNotAllowed("GET")),
            _ => Err(ApiError::not_found("route")),
        };
    }
    match (req.target(ORDERS)?, req.method.as_str()) {
        (Collection, "GET") => list(req),
        (Collection, "POST") => place(req),
        (Collection, _) => Err(ApiError::MethodNotAllowed("GET, POST")),
        (Member(id), "GET") => get(id),
        (Member(id), "DELETE") => cancel(id),
        (Member(id), "PATCH") => advance(req, id),
        (Member(_), _) => Err(ApiError::MethodNotAllowed("GET, PATCH, DELETE")),
    }
}

fn fetch(sql: &impl Sql, id: i64) -> Result<Option<Order>, ApiError> {
    sql.optional(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"), &[Value::Integer(id)])
}

fn get(id: i64) -> Result<Response, ApiError> {
    let order = fetch(&Db, id)?.ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Response::json(200, &order))
}

fn list(req: &Request) -> Result<Response, ApiError> {
    let status = req.query("status")?;
    if status.is_some_and(|s| OrderStatus::parse(s).is_none()) {
        return Err(ApiError::invalid_parameter("status", format!("must be one of: {}", ORDER_STATUSES.join(", "))));
    }
    let filters = Filters::new().equal("status", status);
    paging::list::<Order>(req, "orders", ORDER_COLUMNS, filters, Some("order_status_counts"))
}

/// Place an order: the pet must exist (404) and be available (409); it
/// becomes `pending` in the same transaction. A new order is always `placed`.
fn place(req: &Request) -> Result<Response, ApiError> {
    let body = req.json_object()?;
    let mut v = Validator::new();
    let pet_id = v.integer(&body, "pet_id", (1, i64::MAX), Presence::Required);
    let quantity = v.integer(&body, "quantity", (*QUANTITY.start(), *QUANTITY.end()), Presence::Optional);
    let pet_id = v.finish_with(pet_id)?;

    let now = petstore_guest::time::now_rfc3339();
    let tx = db::begin()?;
    let claimed = tx.run(
        "UPDATE pets SET status = $3, updated_at = $2 WHERE id = $1 AND status = $4",
        &[Value::Integer(pet_id), Value::Text(now.clone()), text(PetStatus::Pending), text(PetStatus::Available)],
    )?;
    if claimed == 0 {
        let pet = tx.rows("SELECT 1 FROM pets WHERE id = $1", &[Value::Integer(pet_id)])?;
        return Err(if pet.rows.is_empty() {
            ApiError::not_found("pet")
        } else {
            ApiError::Conflict("the pet is not available".into())
        });
    }
    let order: Order = tx.one(
        &format!("INSERT INTO orders (pet_id, quantity, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING {ORDER_COLUMNS}"),
        &[
            Value::Integer(pet_id),
            Value::Integer(quantity.unwrap_or(DEFAULT_QUANTITY)),
            Value::Text(OrderStatus::Placed.as_str().into()),
            Value::Text(now),
        ],
    )?;
    db::commit(tx)?;
    Ok(Response::json(201, &order).header("location", format!("{ORDERS}/{}", order.id)))
}

/// Move an order forward (`placed` → `approved` → `delivered`, or straight to
/// `delivered`); delivering sells the pet in the same transaction.
fn advance(req: &Request, id: i64) -> Result<Response, ApiError> {
    let body = req.json_object()?;
    let mut v = Validator::new();
    let status = v.one_of(&body, "status", ORDER_STATUSES, Presence::Required);
    let status = v.finish_with(status.and_then(|s| OrderStatus::parse(&s)))?;
    let earlier: Vec<OrderStatus> = OrderStatus::ALL.iter().copied().filter(|s| *s < status).collect();
    if earlier.is_empty() {
        // Nothing moves forward to the first status: only the reason differs.
        let order = fetch(&Db, id)?.ok_or_else(|| ApiError::not_found("order"))?;
        return Err(backwards(&order.status, status.as_str()));
    }

    let tx = db::begin()?;
    let now = petstore_guest::time::now_rfc3339();
    let mut params = vec![Value::Integer(id), text(status), Value::Text(now.clone())];
    params.extend(earlier.iter().map(|s| text(*s)));
    let updated: Option<Order> = tx.optional(
        &format!(
            "UPDATE orders SET status = $2, updated_at = $3 WHERE id = $1 AND status IN ({}) RETURNING {ORDER_COLUMNS}",
            db::placeholders(4, earlier.len())
        ),
        &params,
    )?;
    let Some(updated) = updated else {
        // Lost: the order is gone, or already at or past `status`.
        let order = fetch(&tx, id)?.ok_or_else(|| ApiError::not_found("order"))?;
        return Err(backwards(&order.status, status.as_str()));
    };
    if status == OrderStatus::Delivered
        && let Some(pet_id) = updated.pet_id
    {
        tx.run(
            "UPDATE pets SET status = $3, updated_at = $2 WHERE id = $1",
            &[Value::Integer(pet_id), Value::Text(now), text(PetStatus::Sold)],
        )?;
    }
    db::commit(tx)?;
    Ok(Response::json(200, &updated))
}

fn backwards(from: &str, to: &str) -> ApiError {
    ApiError::Conflict(format!("an order cannot move from {from} to {to}"))
}

/// The pet of a removed order (`DELETE … RETURNING pet_id`).
struct RemovedOrder {
    pet_id: Option<i64>,
}

impl FromRow for RemovedOrder {
    fn from_row(row: Row<'_>) -> Result<Self, ApiError> {
        Ok(RemovedOrder { pet_id: row.opt_int(0)? })
    }
}

/// Cancel an order that is not delivered: it is removed and its pet is
/// available again, in one transaction.
fn cancel(id: i64) -> Result<Response, ApiError> {
    let tx = db::begin()?;
    let removed: Option<RemovedOrder> = tx.optional(
        "DELETE FROM orders WHERE id = $1 AND status <> $2 RETURNING pet_id",
        &[Value::Integer(id), text(OrderStatus::Delivered)],
    )?;
    let Some(removed) = removed else {
        // Lost: the order is gone (cancelled meanwhile) or delivered.
        return Err(match fetch(&tx, id)? {
            None => ApiError::not_found("order"),
            Some(_) => ApiError::Conflict("a delivered order cannot be cancelled".into()),
        });
    };
    if let Some(pet_id) = removed.pet_id {
        tx.run(
            "UPDATE pets SET status = $3, updated_at = $2 WHERE id = $1",
            &[Value::Integer(pet_id), Value::Text(petstore_guest::time::now_rfc3339()), text(PetStatus::Available)],
        )?;
    }
    db::commit(tx)?;
    Ok(Response::empty(204))
}

#[derive(Serialize, Default)]
struct Inventory {
    available: i64,
    pending: i64,
    sold: i64,
}

/// One `(status, count)` row.
struct StatusCount(String, i64);

impl FromRow for StatusCount {
    fn from_row(row: Row<'_>) -> Result<Self, ApiError> {
        Ok(StatusCount(row.text(0)?, row.int(1)?))
    }
}

fn inventory() -> Result<Response, ApiError> {
    let mut inv = Inventory::default();
    // From the counts the triggers keep: a few rows, not the whole table.
    let counted = "SELECT status, CAST(SUM(n) AS BIGINT) FROM pet_status_counts GROUP BY status";
    for StatusCount(status, count) in Db.all(counted, &[])? {
        match PetStatus::parse(&status) {
            Some(PetStatus::Available) => inv.available = count,
            Some(PetStatus::Pending) => inv.pending = count,
            Some(PetStatus::Sold) => inv.sold = count,
            None => {}
        }
    }
    Ok(Response::json(200, &inv))
}

/// A status as a statement's parameter.
fn text(status: impl Into<&'static str>) -> Value {
    Value::Text(status.into().to_string())
}
