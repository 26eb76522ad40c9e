//! The `pets` handler component: everything under `/api/v1/pets`.
//!
//! Tags live twice: as a JSON array in `pets.tags` (read with the pet in one
//! query) and as rows of `pet_tags` (what the `tag` filter searches), which
//! triggers keep in step (migrations: SQLite 0003, PostgreSQL 0009): writing
//! a pet is one statement.

use petstore_guest::Target::{Collection, Member};
use petstore_guest::db::{self, Db, Sql, Value};
use petstore_guest::model::{
    NAME_MAX, OrderStatus, PET_STATUSES, Pet, PetFields, PetStatus, SPECIES_MAX, TAG_MAX, TAGS_MAX,
};
use petstore_guest::paging::{self, Filters};
use petstore_guest::records::{PET_COLUMNS, PET_FIELD_COLUMNS, Params};
use petstore_guest::validate::{Padding, Presence, Validator};
use petstore_guest::{ApiError, Request, Response};
use serde_json::{Map, Value as Json};

const PREFIX: &str = "/api/v1/pets";

petstore_guest::handler!(route);

fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.target(PREFIX)?, req.method.as_str()) {
        (Collection, "GET") => list(req),
        (Collection, "POST") => create(req),
        (Collection, _) => Err(ApiError::MethodNotAllowed("GET, POST")),
        (Member(id), "GET") => get(id),
        (Member(id), "PUT") => replace(req, id),
        (Member(id), "PATCH") => patch(req, id),
        (Member(id), "DELETE") => delete(id),
        (Member(_), _) => Err(ApiError::MethodNotAllowed("GET, PUT, PATCH, DELETE")),
    }
}

/// Validate a whole pet (create and replace): absent `tags` and `status`
/// take their defaults; `null` is not a value of any field.
fn fields(obj: &Map<String, Json>) -> Result<PetFields, ApiError> {
    let mut v = Validator::new();
    let name = v.text(obj, "name", NAME_MAX, Presence::Required);
    let species = v.text(obj, "species", SPECIES_MAX, Presence::Required);
    let tags = tags(&mut v, obj.get("tags"));
    let status = v.one_of(obj, "status", PET_STATUSES, Presence::Optional);
    let ((name, species), tags) = v.finish_with(name.zip(species).zip(tags))?;
    let status = status.unwrap_or_else(|| PetStatus::Available.as_str().to_string());
    Ok(PetFields { name, species, tags, status })
}

/// At most 10 distinct strings of 1–30 characters, taken as sent (not
/// trimmed: `"a"` and `" a"` cannot both become `a`); absent is `[]`.
fn tags(v: &mut Validator, value: Option<&Json>) -> Option<Vec<String>> {
    let items = match value {
        None => return Some(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(_) => {
            v.fail("tags", "must be an array of strings");
            return None;
        }
    };
    if items.len() > TAGS_MAX {
        v.fail("tags", format!("at most {TAGS_MAX} tags"));
        return None;
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let tag = v.text_value(&format!("tags[{i}]"), item, TAG_MAX, Padding::Refused)?;
        if tags.contains(&tag) {
            v.fail(&format!("tags[{i}]"), "duplicate tag");
            return None;
        }
        tags.push(tag);
    }
    Some(tags)
}

fn list(req: &Request) -> Result<Response, ApiError> {
    let status = req.query("status")?;
    if status.is_some_and(|s| !PET_STATUSES.contains(&s)) {
        return Err(ApiError::invalid_parameter("status", format!("must be one of: {}", PET_STATUSES.join(", "))));
    }
    let (species, tag) = (req.query("species")?, req.query("tag")?);
    let tagged = |n| {
        format!("EXISTS (SELECT 1 FROM pet_tags t WHERE t.pet_id = pets.id AND t.tag = ${n} AND t.pet_id {{after}})")
    };
    let filters = Filters::new().equal("status", status).equal("species", species).condition(tagged, tag);
    // The triggers count pets by status and by species and status; a tag's
    // pets are counted (through its index).
    let counts = match (species, tag) {
        (_, Some(_)) => None,
        (Some(_), None) => Some("pet_species_counts"),
        (None, None) => Some("pet_status_counts"),
    };
    paging::list::<Pet>(req, "pets", PET_COLUMNS, filters, counts)
}

fn get(id: i64) -> Result<Response, ApiError> {
    let pet: Pet = Db
        .optional(&format!("SELECT {PET_COLUMNS} FROM pets WHERE id = $1"), &[Value::Integer(id)])?
        .ok_or_else(|| ApiError::not_found("pet"))?;
    Ok(Response::json(200, &pet))
}

fn create(req: &Request) -> Result<Response, ApiError> {
    let fields = fields(&req.json_object()?)?;
    let params = written(fields)?;
    let pet: Pet = Db.one(
        &format!("INSERT INTO pets ({PET_FIELD_COLUMNS}, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING {PET_COLUMNS}"),
        &params,
    )?;
    Ok(Response::json(201, &pet).header("location", format!("{PREFIX}/{}", pet.id)))
}

fn replace(req: &Request, id: i64) -> Result<Response, ApiError> {
    let fields = fields(&req.json_object()?)?;
    let pet = store(&Db, id, fields)?;
    Ok(Response::json(200, &pet))
}

/// JSON merge patch of `name`, `species`, `tags`, `status`: a member set to
/// `null` is removed, so `tags` and `status` go back to their defaults, and
/// the required `name` and `species` cannot be removed.
fn patch(req: &Request, id: i64) -> Result<Response, ApiError> {
    let patch = req.json_object()?;
    let mut v = Validator::new();
    for field in ["name", "species"] {
        if matches!(patch.get(field), Some(Json::Null)) {
            v.fail(field, "is required and cannot be null");
        }
    }
    v.finish()?;
    let tx = db::begin()?;
    // Read the pet under its row lock, so a concurrent patch cannot be lost
    // between this read and the write below.
    let current = lock(&tx, id)?.ok_or_else(|| ApiError::not_found("pet"))?;
    let mut merged = Map::new();
    merged.insert("name".into(), Json::String(current.name));
    merged.insert("species".into(), Json::String(current.species));
    merged.insert("tags".into(), current.tags.into_iter().map(Json::String).collect());
    merged.insert("status".into(), Json::String(current.status));
    for field in ["name", "species", "tags", "status"] {
        match patch.get(field) {
            Some(Json::Null) => {
                merged.remove(field);
            }
            Some(value) => {
                merged.insert(field.into(), value.clone());
            }
            None => {}
        }
    }
    let pet = store(&tx, id, fields(&merged)?)?;
    db::commit(tx)?;
    Ok(Response::json(200, &pet))
}

/// The pet, read with its row locked until `tx` ends (a no-op update: SQLite
/// has no `SELECT … FOR UPDATE`, and its transactions hold the write lock
/// anyway). Concurrent writers of the pet wait; a waiting one then reads the
/// committed result.
fn lock(tx: &impl Sql, id: i64) -> Result<Option<Pet>, ApiError> {
    tx.optional(
        &format!("UPDATE pets SET updated_at = updated_at WHERE id = $1 RETURNING {PET_COLUMNS}"),
        &[Value::Integer(id)],
    )
}

/// Overwrite a pet's fields (its tags' index follows); `404` when it is gone.
fn store(sql: &impl Sql, id: i64, fields: PetFields) -> Result<Pet, ApiError> {
    let mut params = written(fields)?;
    params.push(Value::Integer(id));
    sql.optional(
        &format!("UPDATE pets SET ({PET_FIELD_COLUMNS}, updated_at) = ($1, $2, $3, $4, $5) WHERE id = $6 RETURNING {PET_COLUMNS}"),
        &params,
    )?
    .ok_or_else(|| ApiError::not_found("pet"))
}

/// What every write of a pet binds: its fields in [`PET_FIELD_COLUMNS`]
/// order, then the time of the write.
fn written(fields: PetFields) -> Result<Vec<Value>, ApiError> {
    let mut params = Params::default();
    fields.bind(&mut params)?;
    params.0.push(Value::Text(petstore_guest::time::now_rfc3339()));
    Ok(params.0)
}

/// `409` while the pet has an order that is not delivered. The pet's row is
/// locked first: an order is placed by claiming that row, so once it is
/// locked no new order can appear, and the check below sees every order
/// committed before (on PostgreSQL each statement reads what was committed
/// when it started).
fn delete(id: i64) -> Result<Response, ApiError> {
    let tx = db::begin()?;
    if lock(&tx, id)?.is_none() {
        return Err(ApiError::not_found("pet"));
    }
    let deleted = tx.run(
        "DELETE FROM pets WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.pet_id = $1 AND o.status <> $2)",
        &[Value::Integer(id), Value::Text(OrderStatus::Delivered.as_str().into())],
    )?;
    if deleted == 0 {
        return Err(ApiError::Conflict("the pet has an order that is not delivered".into()));
    }
    db::commit(tx)?;
    Ok(Response::empty(204))
}
