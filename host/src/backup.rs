//! `petstore export` / `petstore import`: a logical backup of pets and
//! orders that moves data between SQLite and PostgreSQL in either direction.
//!
//! The format (docs/disaster-recovery.md) is JSON lines, UTF-8:
//! line 1 is a header `{"format":"petstore-backup","version":1,…}`, then one
//! `{"type":"pet",…}` line per pet, then one `{"type":"order",…}` line per
//! order, each in id order. Export reads one consistent snapshot. Import
//! validates every record (a bad one is reported with its line number),
//! refuses a database that has data unless told to replace it, and runs in
//! one transaction: it lands whole or not at all.

use std::collections::HashSet;
use std::io::{BufRead, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::storage::{Database, DbError, Transaction, Value};

pub const FORMAT: &str = "petstore-backup";
pub const VERSION: u32 = 1;
/// Rows per multi-row INSERT: well under both backends' parameter limits.
const BATCH: usize = 500;
const PAGE: i64 = 2000;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot read or write the backup: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error("the database already holds {pets} pets and {orders} orders; pass --replace to overwrite them")]
    NotEmpty { pets: i64, orders: i64 },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub exported_at: String,
    pub pets: i64,
    pub orders: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Record {
    Pet {
        id: i64,
        name: String,
        species: String,
        tags: Vec<String>,
        status: String,
        created_at: String,
        updated_at: String,
    },
    Order {
        id: i64,
        pet_id: Option<i64>,
        quantity: i64,
        status: String,
        created_at: String,
        updated_at: String,
    },
}

/// What an export or import moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pets: i64,
    pub orders: i64,
}

/// Write every pet and order to `out`, from one snapshot.
pub async fn export(db: &Database, out: &mut impl Write, exported_at: &str) -> Result<Counts, BackupError> {
    let mut tx = db.begin_snapshot().await?;
    let pets = count(&mut tx, "pets").await?;
    let orders = count(&mut tx, "orders").await?;
    let header = Header { format: FORMAT.into(), version: VERSION, exported_at: exported_at.into(), pets, orders };
    writeln!(out, "{}", json(&header))?;
    let progress = progress_bar((pets + orders) as u64, "exporting");

    let mut last = 0;
    loop {
        let page = tx
            .query(
                "SELECT id, name, species, tags, status, created_at, updated_at FROM pets WHERE id > $1 ORDER BY id LIMIT $2",
                vec![Value::Integer(last), Value::Integer(PAGE)],
            )
            .await?;
        for row in &page.rows {
            let record = Record::Pet {
                id: int(row, 0)?,
                name: text(row, 1)?,
                species: text(row, 2)?,
                tags: serde_json::from_str(&text(row, 3)?).map_err(|e| DbError::Other(format!("stored tags: {e}")))?,
                status: text(row, 4)?,
                created_at: text(row, 5)?,
                updated_at: text(row, 6)?,
            };
            writeln!(out, "{}", json(&record))?;
            last = int(row, 0)?;
        }
        progress.inc(page.rows.len() as u64);
        if page.rows.len() < PAGE as usize {
            break;
        }
    }
    last = 0;
    loop {
        let page = tx
            .query(
                "SELECT id, pet_id, quantity, status, created_at, updated_at FROM orders WHERE id > $1 ORDER BY id LIMIT $2",
                vec![Value::Integer(last), Value::Integer(PAGE)],
            )
            .await?;
        for row in &page.rows {
            let record = Record::Order {
                id: int(row, 0)?,
                pet_id: match row.get(1) {
                    Some(Value::Null) => None,
                    _ => Some(int(row, 1)?),
                },
                quantity: int(row, 2)?,
                status: text(row, 3)?,
                created_at: text(row, 4)?,
                updated_at: text(row, 5)?,
            };
            writeln!(out, "{}", json(&record))?;
            last = int(row, 0)?;
        }
        progress.inc(page.rows.len() as u64);
        if page.rows.len() < PAGE as usize {
            break;
        }
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(Counts { pets, orders })
}

/// Read a backup from `input` (of `size` bytes, for progress) into the
/// database, in one transaction.
pub async fn import(db: &Database, input: impl BufRead, size: u64, replace: bool) -> Result<Counts, BackupError> {
    let mut tx = db.begin().await?;
    let (pets, orders) = (count(&mut tx, "pets").await?, count(&mut tx, "orders").await?);
    if pets + orders > 0 {
        if !replace {
            return Err(BackupError::NotEmpty { pets, orders });
        }
        for table in ["orders", "pet_tags", "pets"] {
            tx.execute(&format!("DELETE FROM {table}"), Vec::new()).await?;
        }
    }
    let progress = progress_bar(size, "importing");
    let mut loader = Loader::default();
    let mut header: Option<Header> = None;
    for (index, line) in input.lines().enumerate() {
        let (number, line) = (index + 1, line?);
        progress.inc(line.len() as u64 + 1);
        let invalid = |message: String| BackupError::Invalid { line: number, message };
        if header.is_none() {
            let h: Header = serde_json::from_str(&line).map_err(|e| invalid(format!("not a backup header: {e}")))?;
            if h.format != FORMAT || h.version != VERSION {
                return Err(invalid(format!(
                    "format {} version {} is not {FORMAT} version {VERSION}",
                    h.format, h.version
                )));
            }
            header = Some(h);
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line).map_err(|e| invalid(format!("not a record: {e}")))?;
        loader.add(&mut tx, record).await.map_err(|e| match e {
            Problem::Invalid(message) => invalid(message),
            Problem::Database(err) => BackupError::Database(err),
        })?;
    }
    let header = header.ok_or(BackupError::Invalid { line: 1, message: "the file is empty".into() })?;
    loader.flush(&mut tx).await.map_err(|e| match e {
        Problem::Invalid(message) => BackupError::Invalid { line: 0, message },
        Problem::Database(err) => BackupError::Database(err),
    })?;
    let counts = Counts { pets: loader.pets, orders: loader.orders };
    if (header.pets, header.orders) != (counts.pets, counts.orders) {
        return Err(BackupError::Invalid {
            line: 1,
            message: format!(
                "the header promises {} pets and {} orders but the file holds {} and {}: it is truncated or edited",
                header.pets, header.orders, counts.pets, counts.orders
            ),
        });
    }
    tx.restart_id_sequences().await?;
    tx.commit().await?;
    progress.finish_and_clear();
    Ok(counts)
}

enum Problem {
    Invalid(String),
    Database(DbError),
}

impl From<DbError> for Problem {
    fn from(err: DbError) -> Self {
        Problem::Database(err)
    }
}

/// Validates records and writes them in batches.
#[derive(Default)]
struct Loader {
    pet_ids: HashSet<i64>,
    order_ids: HashSet<i64>,
    pet_rows: Vec<Vec<Value>>,
    tag_rows: Vec<Vec<Value>>,
    order_rows: Vec<Vec<Value>>,
    pets: i64,
    orders: i64,
}

impl Loader {
    async fn add(&mut self, tx: &mut Transaction, record: Record) -> Result<(), Problem> {
        match record {
            Record::Pet { id, name, species, tags, status, created_at, updated_at } => {
                if self.orders > 0 {
                    return Err(Problem::Invalid("pets must come before orders".into()));
                }
                check(id > 0 && self.pet_ids.insert(id), "pet id must be positive and unique")?;
                check_text(&name, 100, "name")?;
                check_text(&species, 50, "species")?;
                check(tags.len() <= 10, "at most 10 tags")?;
                let mut seen = HashSet::new();
                for tag in &tags {
                    check_text(tag, 30, "tag")?;
                    check(seen.insert(tag), "duplicate tag")?;
                }
                check(
                    ["available", "pending", "sold"].contains(&status.as_str()),
                    "pet status is not available, pending or sold",
                )?;
                check_time(&created_at)?;
                check_time(&updated_at)?;
                let tags_json = serde_json::to_string(&tags).map_err(|e| Problem::Invalid(e.to_string()))?;
                for tag in tags {
                    self.tag_rows.push(vec![Value::Integer(id), Value::Text(tag)]);
                }
                self.pet_rows.push(vec![
                    Value::Integer(id),
                    Value::Text(name),
                    Value::Text(species),
                    Value::Text(tags_json),
                    Value::Text(status),
                    Value::Text(created_at),
                    Value::Text(updated_at),
                ]);
                self.pets += 1;
            }
            Record::Order { id, pet_id, quantity, status, created_at, updated_at } => {
                check(id > 0 && self.order_ids.insert(id), "order id must be positive and unique")?;
                if let Some(pet) = pet_id {
                    check(self.pet_ids.contains(&pet), "the order's pet_id names no pet in this backup")?;
                }
                check((1..=100).contains(&quantity), "quantity must be 1 to 100")?;
                check(
                    ["placed", "approved", "delivered"].contains(&status.as_str()),
                    "order status is not placed, approved or delivered",
                )?;
                check_time(&created_at)?;
                check_time(&updated_at)?;
                self.order_rows.push(vec![
                    Value::Integer(id),
                    pet_id.map_or(Value::Null, Value::Integer),
                    Value::Integer(quantity),
                    Value::Text(status),
                    Value::Text(created_at),
                    Value::Text(updated_at),
                ]);
                self.orders += 1;
            }
        }
        if self.pet_rows.len() >= BATCH || self.tag_rows.len() >= BATCH || self.order_rows.len() >= BATCH {
            self.flush(tx).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, tx: &mut Transaction) -> Result<(), Problem> {
        insert(tx, "pets (id, name, species, tags, status, created_at, updated_at)", &mut self.pet_rows).await?;
        insert(tx, "pet_tags (pet_id, tag)", &mut self.tag_rows).await?;
        insert(tx, "orders (id, pet_id, quantity, status, created_at, updated_at)", &mut self.order_rows).await?;
        Ok(())
    }
}

/// One multi-row INSERT of `rows` (then emptied).
async fn insert(tx: &mut Transaction, target: &str, rows: &mut Vec<Vec<Value>>) -> Result<(), DbError> {
    if rows.is_empty() {
        return Ok(());
    }
    let width = rows[0].len();
    let mut n = 0;
    let tuples: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    let mut params = Vec::with_capacity(rows.len() * width);
    for row in rows.drain(..) {
        params.extend(row);
    }
    tx.execute(&format!("INSERT INTO {target} VALUES {}", tuples.join(", ")), params).await?;
    Ok(())
}

fn check(ok: bool, message: &str) -> Result<(), Problem> {
    if ok { Ok(()) } else { Err(Problem::Invalid(message.to_string())) }
}

/// 1..=max characters, already trimmed (as the API stores them).
fn check_text(s: &str, max: usize, what: &str) -> Result<(), Problem> {
    let len = s.chars().count();
    check(len >= 1 && len <= max && s.trim() == s, &format!("{what} must be 1 to {max} characters, trimmed"))
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as the service writes times.
fn check_time(s: &str) -> Result<(), Problem> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z';
    check(ok, &format!("{s:?} is not an RFC 3339 UTC time like 2026-11-26T03:00:00Z"))
}

async fn count(tx: &mut Transaction, table: &str) -> Result<i64, DbError> {
    let rows = tx.query(&format!("SELECT COUNT(*) FROM {table}"), Vec::new()).await?;
    rows.rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| if let Value::Integer(n) = v { Some(*n) } else { None })
        .ok_or_else(|| DbError::Other("COUNT(*) returned no integer".into()))
}

fn int(row: &[Value], i: usize) -> Result<i64, DbError> {
    match row.get(i) {
        Some(Value::Integer(n)) => Ok(*n),
        other => Err(DbError::Other(format!("column {i}: expected an integer, found {other:?}"))),
    }
}

fn text(row: &[Value], i: usize) -> Result<String, DbError> {
    match row.get(i) {
        Some(Value::Text(s)) => Ok(s.clone()),
        other => Err(DbError::Other(format!("column {i}: expected text, found {other:?}"))),
    }
}

fn json(value: &impl Serialize) -> String {
    // Our own plain structs always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}
