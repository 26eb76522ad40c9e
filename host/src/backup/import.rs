//! `petstore import`: load a backup into the database in one transaction,
//! checking every record against the rules the API enforces.

use std::collections::HashSet;
use std::io::BufRead;

use petstore_model::{self as model, ORDER_COLUMNS, Order, PET_COLUMNS, Padding, Pet};

use super::{BackupError, Counts, FORMAT, Header, Record, VERSION, count, progress_bar};
use crate::storage::{Database, DbError, Transaction, Value};

/// Parameters per multi-row INSERT (500 pets): well under both backends'
/// limits (SQLite 32,766, PostgreSQL 65,535).
const BATCH: usize = 3_500;

/// Read a backup from `input` (of `size` bytes, for progress) into the
/// database, in one transaction.
pub async fn import(db: &Database, input: impl BufRead, size: u64, replace: bool) -> Result<Counts, BackupError> {
    let mut tx = db.begin().await?;
    tx.before_restore().await?;
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
        loader.add(&mut tx, record).await.map_err(|e| e.at(number))?;
    }
    let header = header.ok_or(BackupError::Invalid { line: 1, message: "the file is empty".into() })?;
    loader.flush(&mut tx).await.map_err(|e| e.at(0))?;
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
    tx.after_restore().await?;
    tx.commit().await?;
    progress.finish_and_clear();
    Ok(counts)
}

/// A record that cannot be loaded: invalid, or refused by the database.
enum Problem {
    Invalid(String),
    Database(DbError),
}

impl Problem {
    fn at(self, line: usize) -> BackupError {
        match self {
            Problem::Invalid(message) => BackupError::Invalid { line, message },
            Problem::Database(err) => BackupError::Database(err),
        }
    }
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
    pet_rows: Rows,
    order_rows: Rows,
    pets: i64,
    orders: i64,
}

impl Loader {
    async fn add(&mut self, tx: &mut Transaction, record: Record) -> Result<(), Problem> {
        match record {
            Record::Pet(pet) => {
                if self.orders > 0 {
                    return Err(Problem::Invalid("pets must come before orders".into()));
                }
                check(pet.id > 0 && self.pet_ids.insert(pet.id), "pet id must be positive and unique")?;
                self.add_pet(pet)?;
            }
            Record::Order(order) => {
                check(order.id > 0 && self.order_ids.insert(order.id), "order id must be positive and unique")?;
                if let Some(pet) = order.pet_id {
                    check(self.pet_ids.contains(&pet), "the order's pet_id names no pet in this backup")?;
                }
                self.add_order(order)?;
            }
        }
        if self.pet_rows.0.len() >= BATCH || self.order_rows.0.len() >= BATCH {
            self.flush(tx).await?;
        }
        Ok(())
    }

    /// A pet obeys the rules the API enforces, stored as the API stores it.
    fn add_pet(&mut self, pet: Pet) -> Result<(), Problem> {
        stored_text(&pet.name, model::NAME_MAX, Padding::Trimmed, "name")?;
        stored_text(&pet.species, model::SPECIES_MAX, Padding::Trimmed, "species")?;
        check(pet.tags.len() <= model::TAGS_MAX, format_args!("at most {} tags", model::TAGS_MAX))?;
        let mut seen = HashSet::new();
        for tag in &pet.tags {
            stored_text(tag, model::TAG_MAX, Padding::Refused, "tag")?;
            check(seen.insert(tag), "duplicate tag")?;
        }
        if model::PetStatus::parse(&pet.status).is_none() {
            return Err(Problem::Invalid(format!("pet status is not one of: {}", model::PET_STATUSES.join(", "))));
        }
        check_times(&pet.created_at, &pet.updated_at)?;
        // The tags' index (pet_tags) follows by trigger.
        self.pets += 1;
        pet.bind(&mut self.pet_rows)
    }

    fn add_order(&mut self, order: Order) -> Result<(), Problem> {
        check(model::QUANTITY.contains(&order.quantity), "quantity must be 1 to 100")?;
        if model::OrderStatus::parse(&order.status).is_none() {
            return Err(Problem::Invalid(format!("order status is not one of: {}", model::ORDER_STATUSES.join(", "))));
        }
        check_times(&order.created_at, &order.updated_at)?;
        self.orders += 1;
        order.bind(&mut self.order_rows)
    }

    async fn flush(&mut self, tx: &mut Transaction) -> Result<(), Problem> {
        insert(tx, "pets", PET_COLUMNS, &mut self.pet_rows).await?;
        insert(tx, "orders", ORDER_COLUMNS, &mut self.order_rows).await?;
        Ok(())
    }
}

model::params!(
    /// A batch's parameters: each record's `bind`, record after record.
    Rows(Value), Problem = |e| Problem::Invalid(e.to_string())
);

/// One multi-row INSERT into `table` of `rows`: values of `columns`, row
/// after row; `rows` is emptied.
async fn insert(tx: &mut Transaction, table: &str, columns: &str, rows: &mut Rows) -> Result<(), DbError> {
    let width = columns.split(", ").count();
    if rows.0.is_empty() {
        return Ok(());
    }
    let tuples: Vec<String> = (0..rows.0.len() / width)
        .map(|r| format!("({})", (1..=width).map(|c| format!("${}", r * width + c)).collect::<Vec<_>>().join(", ")))
        .collect();
    tx.execute(&format!("INSERT INTO {table} ({columns}) VALUES {}", tuples.join(", ")), std::mem::take(&mut rows.0))
        .await?;
    Ok(())
}

/// `message` becomes text only when the check fails: these run on every
/// record of a backup.
fn check(ok: bool, message: impl std::fmt::Display) -> Result<(), Problem> {
    if ok { Ok(()) } else { Err(Problem::Invalid(message.to_string())) }
}

/// Text as the API stores it: its rule holds, and it is already trimmed.
fn stored_text(text: &str, max: usize, padding: Padding, what: &str) -> Result<(), Problem> {
    match model::text(text, max, padding) {
        Ok(stored) if stored == text => Ok(()),
        Ok(_) => Err(Problem::Invalid(format!("{what} must be stored trimmed"))),
        Err(broken) => Err(Problem::Invalid(format!("{what} {broken}"))),
    }
}

fn check_times(created_at: &str, updated_at: &str) -> Result<(), Problem> {
    for time in [created_at, updated_at] {
        check(
            model::is_timestamp(time),
            format_args!("{time:?} is not an RFC 3339 UTC time like 2026-11-26T03:00:00Z"),
        )?;
    }
    Ok(())
}
