//! `petstore export` / `petstore import`: a logical backup of pets and
//! orders that moves data between SQLite and PostgreSQL in either direction.
//!
//! The format (docs/disaster-recovery.md) is JSON lines, UTF-8:
//! line 1 is a header `{"format":"petstore-backup","version":1,…}`, then one
//! `{"type":"pet",…}` line per pet, then one `{"type":"order",…}` line per
//! order, each in id order. Export (here) reads one consistent snapshot.
//! Import (`import`) validates every record against the model's rules (a
//! bad one is reported with its line number), refuses a database that has
//! data unless told to replace it, and runs in one transaction: it lands
//! whole or not at all.

mod import;

pub use import::import;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use petstore_model::{Columns, ORDER_COLUMNS, Order, PET_COLUMNS, Pet};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Config;
use crate::storage::column::{int, optional_int, text};
use crate::storage::{ConnectOptions, Database, DbError, Transaction, Value};

pub const FORMAT: &str = "petstore-backup";
pub const VERSION: u32 = 1;
/// Rows per page read while exporting.
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

/// One line after the header.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Record {
    Pet(Pet),
    Order(Order),
}

/// What an export or import moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pets: i64,
    pub orders: i64,
}

/// How long export and import wait for a database that is starting.
const DATABASE_WAIT: Duration = Duration::from_secs(30);

/// `petstore export --to FILE`: export `DATABASE_URL`, then say what moved.
pub async fn export_command(config: Config, to: String) -> anyhow::Result<()> {
    let db = open(&config).await?;
    let started = Instant::now();
    let exported_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let counts = export_to(&db, &to, &exported_at).await?;
    let took = started.elapsed().as_secs_f64();
    eprintln!("exported {} pets and {} orders to {to} in {took:.1} s", counts.pets, counts.orders);
    Ok(())
}

/// `petstore import --from FILE [--replace]`: import into `DATABASE_URL`,
/// then say what moved.
pub async fn import_command(config: Config, from: String, replace: bool) -> anyhow::Result<()> {
    let db = open(&config).await?;
    let started = Instant::now();
    let counts = import_from(&db, &from, replace).await?;
    let took = started.elapsed().as_secs_f64();
    eprintln!("imported {} pets and {} orders from {from} in {took:.1} s", counts.pets, counts.orders);
    Ok(())
}

/// The database for a backup command: two connections, no statement
/// timeout to speak of (a backup's statements may legitimately run long).
async fn open(config: &Config) -> anyhow::Result<Database> {
    let options = ConnectOptions {
        max_connections: 2,
        acquire_timeout: config.db_acquire_timeout,
        statement_timeout: Duration::from_secs(600),
        user: config.db_user.clone(),
        password: config.db_password.clone(),
        components: None,
    };
    let db = Database::open(&config.database_url, &options).await?.data;
    db.wait_ready(DATABASE_WAIT).await?;
    Ok(db)
}

/// Export to `to` (`-` for stdout). A file is written beside its target and
/// renamed when complete, so a failed export leaves no half file.
pub async fn export_to(db: &Database, to: &str, exported_at: &str) -> Result<Counts, BackupError> {
    if to == "-" {
        return export(db, &mut std::io::stdout().lock(), exported_at).await;
    }
    let partial = PathBuf::from(format!("{to}.partial"));
    let mut file = BufWriter::new(File::create(&partial)?);
    let counts = export(db, &mut file, exported_at).await?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, to)?;
    Ok(counts)
}

/// Import from `from` (`-` for stdin).
pub async fn import_from(db: &Database, from: &str, replace: bool) -> Result<Counts, BackupError> {
    if from == "-" {
        return import(db, std::io::stdin().lock(), 0, replace).await;
    }
    let file = File::open(from).map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {from}: {e}")))?;
    let size = file.metadata()?.len();
    import(db, BufReader::new(file), size, replace).await
}

/// Write every pet and order to `out`, from one snapshot.
pub async fn export(db: &Database, out: &mut impl Write, exported_at: &str) -> Result<Counts, BackupError> {
    let mut tx = db.begin_snapshot().await?;
    let pets = count(&mut tx, "pets").await?;
    let orders = count(&mut tx, "orders").await?;
    let header = Header { format: FORMAT.into(), version: VERSION, exported_at: exported_at.into(), pets, orders };
    writeln!(out, "{}", json(&header))?;
    let progress = progress_bar((pets + orders) as u64, "exporting");
    export_table(&mut tx, out, &progress, "pets", PET_COLUMNS, |row| Ok(Record::Pet(Pet::from_row(&Stored(row))?)))
        .await?;
    export_table(&mut tx, out, &progress, "orders", ORDER_COLUMNS, |row| {
        Ok(Record::Order(Order::from_row(&Stored(row))?))
    })
    .await?;
    out.flush()?;
    progress.finish_and_clear();
    Ok(Counts { pets, orders })
}

/// Write every row of `table`, in id order (`id` first among `columns`),
/// a page at a time.
async fn export_table(
    tx: &mut Transaction,
    out: &mut impl Write,
    progress: &ProgressBar,
    table: &str,
    columns: &str,
    record: impl Fn(&[Value]) -> Result<Record, DbError>,
) -> Result<(), BackupError> {
    let sql = format!("SELECT {columns} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2");
    let mut last = 0;
    loop {
        let page = tx.query(&sql, vec![Value::Integer(last), Value::Integer(PAGE)]).await?;
        for row in &page.rows {
            writeln!(out, "{}", json(&record(row)?))?;
            last = int(row, 0)?;
        }
        progress.inc(page.rows.len() as u64);
        if page.rows.len() < PAGE as usize {
            return Ok(());
        }
    }
}

pub(crate) async fn count(tx: &mut Transaction, table: &str) -> Result<i64, DbError> {
    let rows = tx.query(&format!("SELECT COUNT(*) FROM {table}"), Vec::new()).await?;
    rows.rows.first().map(|row| int(row, 0)).unwrap_or_else(|| Err(DbError::Other("COUNT(*) returned no row".into())))
}

fn json(value: &impl Serialize) -> String {
    // Our own plain structs always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub(crate) fn progress_bar(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// A stored row, read by the model into a record.
struct Stored<'a>(&'a [Value]);

impl Columns for Stored<'_> {
    type Error = DbError;

    fn int(&self, i: usize) -> Result<i64, DbError> {
        int(self.0, i)
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        optional_int(self.0, i)
    }

    fn text(&self, i: usize) -> Result<String, DbError> {
        text(self.0, i)
    }

    fn tags(&self, i: usize) -> Result<Vec<String>, DbError> {
        serde_json::from_str(&text(self.0, i)?).map_err(|e| DbError::Other(format!("stored tags: {e}")))
    }
}
