//! The native baseline for `bench/compare`: `GET /api/v1/pets/{id}`,
//! `GET /api/v1/pets?limit=&offset=` and `POST /api/v1/pets`, written
//! directly in Rust on the host's HTTP stack (axum/hyper) over the same
//! schema (the host's migrations) and the same SQLite settings. It answers
//! what the Wasm path answers, so the two can be compared request for
//! request. Benchmark code, not a product: PORT and DATABASE_URL only.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[derive(Serialize)]
struct Pet {
    id: i64,
    name: String,
    species: String,
    tags: Vec<String>,
    status: String,
    created_at: String,
    updated_at: String,
}

fn pet(row: &sqlx::sqlite::SqliteRow) -> Pet {
    Pet {
        id: row.get(0),
        name: row.get(1),
        species: row.get(2),
        tags: serde_json::from_str(row.get::<&str, _>(3)).unwrap_or_default(),
        status: row.get(4),
        created_at: row.get(5),
        updated_at: row.get(6),
    }
}

const COLUMNS: &str = "id, name, species, tags, status, created_at, updated_at";

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": code}}))).into_response()
}

async fn get_pet(State(db): State<SqlitePool>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else { return error(StatusCode::BAD_REQUEST, "invalid_parameter") };
    match sqlx::query(&format!("SELECT {COLUMNS} FROM pets WHERE id = $1")).bind(id).fetch_optional(&db).await {
        Ok(Some(row)) => Json(pet(&row)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(State(db): State<SqlitePool>, Query(page): Query<Page>) -> Response {
    let (limit, offset) = (page.limit.unwrap_or(20), page.offset.unwrap_or(0));
    if !(1..=100).contains(&limit) || offset < 0 {
        return error(StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    let total: i64 = match sqlx::query_scalar("SELECT COUNT(*) FROM pets").fetch_one(&db).await {
        Ok(n) => n,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM pets ORDER BY id LIMIT $1 OFFSET $2"))
        .bind(limit)
        .bind(offset)
        .fetch_all(&db)
        .await;
    let Ok(rows) = rows else { return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable") };
    let items: Vec<Pet> = rows.iter().map(pet).collect();
    let mut headers = HeaderMap::new();
    if offset + (items.len() as i64) < total {
        let link = format!("</api/v1/pets?limit={limit}&offset={}>; rel=\"next\"", offset + items.len() as i64);
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
    (headers, Json(json!({"items": items, "total": total, "limit": limit, "offset": offset}))).into_response()
}

async fn create(State(db): State<SqlitePool>, Json(body): Json<Value>) -> Response {
    let text = |field: &str, max: usize| {
        body.get(field).and_then(Value::as_str).map(str::trim).filter(|s| (1..=max).contains(&s.chars().count()))
    };
    let (Some(name), Some(species)) = (text("name", 100), text("species", 50)) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    };
    let tags: Vec<String> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= 10 => {
            items.iter().filter_map(|t| t.as_str().map(|s| s.trim().to_string())).collect()
        }
        _ => return error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
    };
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // sqlx's begin is not cancel-safe (a client gone mid-BEGIN leaves the
    // connection in an orphaned transaction): run it to completion, as the
    // host does.
    let pool = db.clone();
    let Ok(Ok(mut tx)) = tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await }).await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    let row = sqlx::query(&format!(
        "INSERT INTO pets (name, species, tags, status, created_at, updated_at) VALUES ($1, $2, $3, 'available', $4, $4) RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(species)
    .bind(serde_json::to_string(&tags).unwrap_or_default())
    .bind(&now)
    .fetch_one(&mut *tx)
    .await;
    let Ok(row) = row else { return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable") };
    let created = pet(&row);
    for tag in &tags {
        if sqlx::query("INSERT INTO pet_tags (pet_id, tag) VALUES ($1, $2)")
            .bind(created.id)
            .bind(tag)
            .execute(&mut *tx)
            .await
            .is_err()
        {
            return error(StatusCode::CONFLICT, "conflict");
        }
    }
    if !matches!(tokio::spawn(tx.commit()).await, Ok(Ok(()))) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    let location = format!("/api/v1/pets/{}", created.id);
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://native.db".into());
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8081);
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let db = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    sqlx::migrate!("../../host/migrations/sqlite").run(&db).await?;
    let app = Router::new()
        .route("/api/v1/health/ready", get(|| async { "ok" }))
        .route("/api/v1/pets", get(list).post(create))
        .route("/api/v1/pets/{id}", get(get_pet))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
