//! The SQLite backend: WAL, a busy timeout, foreign keys on. Reads use a
//! fixed set of reader connections; every write (a statement that is not a
//! plain SELECT, or a transaction, which is `BEGIN IMMEDIATE` so a
//! read-then-write never deadlocks) runs on the one writer connection,
//! whose writers queue first come first served instead of in SQLite's busy
//! handler. Every connection carries a sandbox (`sandbox.rs`): SQLite itself
//! keeps a component's statements to its grant and its deadline, after the
//! host's screen (`storage/screen.rs`) has refused what it can name.
//!
//! The component registry is a database file of its own beside the data
//! (`petstore.db` → `petstore.registry.db`), which no connection that runs
//! a component's statement ever opens.

mod library;
mod pool;
mod sandbox;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteQueryResult, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, TypeInfo, ValueRef};
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::pool::{Conn, Lease, Readers};
use self::sandbox::Purpose;
use super::backend::{Backend, BackendTransaction};
use super::screen::Screen;
use super::sql::{self, Dialect};
use super::statement::Syntax;
use super::{COMPONENT_RESULT_LIMIT, Caller, ConnectOptions, DbError, ErrorClass, RowSet, Value, until};

/// How long a writer waits for the write lock before answering `busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often WAL frames are copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// WAL pages (4 KiB) that make a commit checkpoint: the WAL's bound, 16 MiB.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;

/// Reader connections of the registry's file.
const REGISTRY_READERS: u32 = 2;

/// The registry's tables, which lived in the data file before it had a file
/// of its own (migration 0005 removes them there).
const REGISTRY_TABLES: [&str; 3] = ["component_versions", "component_active", "replica_components"];

pub struct Sqlite {
    /// Connections for reads (and snapshots).
    readers: Arc<Readers>,
    /// SQLite lets one writer at a time. Waiting for this connection is a
    /// FIFO queue; waiting in SQLite's busy handler is sleep-and-retry with
    /// back-off, which under load left the lock idle while writers slept
    /// (measured: POST p99 285 ms → see docs/performance.md), and one
    /// connection kept for writes costs no pool round trip per statement.
    writer: Arc<Mutex<Conn>>,
    acquire_timeout: Duration,
}

/// A write transaction holds the writer; a snapshot holds a reader.
enum Transaction {
    Write(OwnedMutexGuard<Conn>, Caller),
    Snapshot(Lease),
}

impl Sqlite {
    /// Open (creating the files if needed) and migrate the data at `url` and
    /// the registry beside it, before returning: local files, so failing
    /// fast is clearest. Returns the data, then the registry.
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<(Sqlite, Sqlite), DbError> {
        library::configure();
        let data = connect_options(url)?;
        let registry = data.clone().filename(registry_path(data.get_filename()));
        // The registry is the host's alone, and rarely busy: two readers.
        let registry_options =
            ConnectOptions { max_connections: REGISTRY_READERS, components: None, ..options.clone() };
        let registry_db = Sqlite::connect(&registry, &registry_options, Purpose::Registry).await?;
        move_registry_out(&data, &registry).await?;
        let data_db = Sqlite::connect(&data, options, Purpose::Data).await?;
        Ok((data_db, registry_db))
    }

    async fn connect(
        options: &SqliteConnectOptions,
        pool: &ConnectOptions,
        purpose: Purpose,
    ) -> Result<Sqlite, DbError> {
        let grants = pool.components.as_ref().map_or(&[][..], |access| access.grants.as_slice());
        let screen = Arc::new(Screen::new(grants));
        let mut conn = SqliteConnection::connect_with(options).await.map_err(Self::classify)?;
        let migrated = match purpose {
            Purpose::Data => sqlx::migrate!("./migrations/sqlite").run(&mut conn).await,
            Purpose::Registry => sqlx::migrate!("./migrations/sqlite-registry").run(&mut conn).await,
        };
        migrated.map_err(|e| DbError::Other(format!("migration failed: {e}")))?;
        let writer = Conn::new(conn, false, purpose, screen.clone()).await?;
        let mut readers = Vec::new();
        for _ in 0..pool.max_connections {
            let conn = SqliteConnection::connect_with(options).await.map_err(Self::classify)?;
            readers.push(Conn::new(conn, true, purpose, screen.clone()).await?);
        }
        let readers = Arc::new(Readers::new(readers));
        tokio::spawn(checkpoint_periodically(Arc::downgrade(&readers)));
        Ok(Sqlite { readers, writer: Arc::new(Mutex::new(writer)), acquire_timeout: pool.acquire_timeout })
    }

    /// The writer, waited for in turn; longer than SQLite's own busy
    /// timeout (or past the caller's deadline) is `busy`, as it was before
    /// the queue (e.g. a request that opens a second write transaction
    /// while it holds one).
    async fn writer(&self, caller: &Caller) -> Result<OwnedMutexGuard<Conn>, DbError> {
        let mut writer = tokio::time::timeout_at(until(caller, BUSY_TIMEOUT), self.writer.clone().lock_owned())
            .await
            .map_err(|_| DbError::Busy("timed out waiting for the write lock".into()))?;
        writer.clean().await?;
        Ok(writer)
    }

    async fn reader(&self, caller: &Caller) -> Result<Lease, DbError> {
        self.readers.acquire(until(caller, self.acquire_timeout)).await
    }

    fn classify(err: sqlx::Error) -> DbError {
        sql::classify(err, class_of)
    }
}

fn connect_options(url: &str) -> Result<SqliteConnectOptions, DbError> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| DbError::Other(format!("invalid SQLite URL: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // A commit that finds this many pages in the WAL copies them back
        // into the database file while it holds the one write lock; the
        // background checkpoint (`checkpoint_periodically`) has copied
        // most of them by then, so that commit's share is short.
        // SQLite's default, 1,000, made one commit in ~170 pay a full copy.
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string()))
}

/// `petstore.db` → `petstore.registry.db`, beside it.
fn registry_path(data: &Path) -> PathBuf {
    let stem = data.file_stem().map_or_else(|| "petstore".into(), |s| s.to_string_lossy().into_owned());
    let name = match data.extension() {
        Some(ext) => format!("{stem}.registry.{}", ext.to_string_lossy()),
        None => format!("{stem}.registry"),
    };
    data.with_file_name(name)
}

/// A data file from before the registry had a file of its own still holds
/// the registry's tables: copy their rows into the registry file (once:
/// rows already there are kept), before the data's migration 0005 drops
/// them. Compiled artifacts are not carried over: they were authenticated
/// with the admin token, which no longer vouches for native code.
async fn move_registry_out(data: &SqliteConnectOptions, registry: &SqliteConnectOptions) -> Result<(), DbError> {
    let mut conn = SqliteConnection::connect_with(data).await.map_err(Sqlite::classify)?;
    let old: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'component_versions'")
            .fetch_all(&mut conn)
            .await
            .map_err(Sqlite::classify)?;
    if old.is_empty() {
        return conn.close().await.map_err(Sqlite::classify);
    }
    let path = registry.get_filename().to_string_lossy().into_owned();
    sqlx::query("ATTACH DATABASE $1 AS registry").bind(path).execute(&mut conn).await.map_err(Sqlite::classify)?;
    let copy = [
        "INSERT OR IGNORE INTO registry.component_versions \
         (name, digest, bytes, signature, size, uploaded_at, uploaded_by) \
         SELECT name, digest, bytes, signature, size, uploaded_at, uploaded_by FROM main.component_versions",
        "INSERT OR IGNORE INTO registry.component_active (name, digest, activated_at) \
         SELECT name, digest, activated_at FROM main.component_active",
        "INSERT OR IGNORE INTO registry.replica_components \
         (replica, name, digest, state, reason, heartbeat_ms) \
         SELECT replica, name, digest, state, reason, heartbeat_ms FROM main.replica_components",
    ];
    let mut tx = conn.begin().await.map_err(Sqlite::classify)?;
    for sql in copy {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(Sqlite::classify)?;
    }
    tx.commit().await.map_err(Sqlite::classify)?;
    tracing::info!(tables = ?REGISTRY_TABLES, "moved the component registry into its own file");
    conn.close().await.map_err(Sqlite::classify)
}

#[async_trait]
impl Backend for Sqlite {
    fn syntax(&self) -> Syntax {
        Syntax::Sqlite
    }

    async fn query(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        let limit = caller.grant().map(|_| COMPONENT_RESULT_LIMIT);
        let run = async |conn: &mut SqliteConnection, sql| sql::query::<Self, _>(conn, sql, params, limit).await;
        if super::is_select(sql) {
            self.reader(caller).await?.run(caller, sql, run).await
        } else {
            self.writer(caller).await?.run(caller, sql, run).await
        }
    }

    async fn execute(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let run = async |conn: &mut SqliteConnection, sql| sql::execute::<Self, _>(conn, sql, params).await;
        if super::is_select(sql) {
            self.reader(caller).await?.run(caller, sql, run).await
        } else {
            self.writer(caller).await?.run(caller, sql, run).await
        }
    }

    async fn begin(&self, caller: &Caller) -> Result<Box<dyn BackendTransaction>, DbError> {
        let mut writer = self.writer(caller).await?;
        writer.begin("BEGIN IMMEDIATE").await?;
        Ok(Box::new(Transaction::Write(writer, caller.clone())))
    }

    /// A transaction that takes no lock until it reads: in WAL mode its
    /// first read fixes the snapshot it sees, and writers are not blocked.
    async fn begin_snapshot(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        let mut reader = self.reader(&Caller::Host).await?;
        reader.begin("BEGIN").await?;
        Ok(Box::new(Transaction::Snapshot(reader)))
    }

    /// The readers, and the writer as one more connection.
    fn pool_stats(&self) -> (u32, usize) {
        let writer_idle = usize::from(self.writer.try_lock().is_ok());
        let (size, idle) = self.readers.stats();
        (size as u32 + 1, idle + writer_idle)
    }
}

/// Copy the WAL back into the database file every [`CHECKPOINT_INTERVAL`],
/// on a reader, until the backend is dropped. PASSIVE: it never waits for
/// readers or the writer, which go on meanwhile. It cannot rewind the WAL
/// while writes keep coming; the commit that reaches
/// [`WAL_AUTOCHECKPOINT_PAGES`] does, after copying what is left.
async fn checkpoint_periodically(readers: Weak<Readers>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let Some(readers) = readers.upgrade() else { return };
        let checkpoint = async {
            let mut reader = readers.acquire(tokio::time::Instant::now() + CHECKPOINT_INTERVAL).await?;
            reader.host("PRAGMA wal_checkpoint(PASSIVE)").await
        };
        match checkpoint.await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(()) => {}
            // Once per spell of failures, not ten times a second.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying every interval");
            }
            Err(_) => {}
        }
    }
}

impl Transaction {
    fn conn(&mut self) -> (&mut Conn, &Caller) {
        match self {
            Transaction::Write(writer, caller) => (writer, caller),
            Transaction::Snapshot(reader) => (reader, &Caller::Host),
        }
    }
}

/// SQLite's AUTOINCREMENT follows restored ids by itself: nothing to do
/// after a restore. A transaction dropped without a commit is rolled back
/// by its connection's next user (see `pool::Conn`).
#[async_trait]
impl BackendTransaction for Transaction {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        let (conn, caller) = self.conn();
        let limit = caller.grant().map(|_| COMPONENT_RESULT_LIMIT);
        let caller = caller.clone();
        conn.run(&caller, sql, async |conn: &mut SqliteConnection, sql| {
            sql::query::<Sqlite, _>(conn, sql, params, limit).await
        })
        .await
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let (conn, caller) = self.conn();
        let caller = caller.clone();
        conn.run(&caller, sql, async |conn: &mut SqliteConnection, sql| {
            sql::execute::<Sqlite, _>(conn, sql, params).await
        })
        .await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), DbError> {
        self.conn().0.commit().await
    }
}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;

    fn bind(sql: String, params: Vec<Value>) -> sql::Bound<sqlx::Sqlite> {
        sql::bind::<sqlx::Sqlite, i64>(sql, params)
    }

    /// Decode by each value's storage class; an INTEGER in a column declared
    /// BOOLEAN becomes a boolean, as PostgreSQL would answer.
    fn decode_row(row: &SqliteRow) -> Result<Vec<Value>, DbError> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Value::Null);
                }
                let storage = raw.type_info().name().to_string();
                Ok(match storage.as_str() {
                    "INTEGER" | "BOOLEAN" => {
                        let n: i64 = row.try_get_unchecked(i)?;
                        if sqlx::Column::type_info(&row.columns()[i]).name() == "BOOLEAN" {
                            Value::Boolean(n != 0)
                        } else {
                            Value::Integer(n)
                        }
                    }
                    "REAL" => Value::Real(row.try_get_unchecked(i)?),
                    "TEXT" => Value::Text(row.try_get_unchecked(i)?),
                    _ => Value::Blob(row.try_get_unchecked(i)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Self::classify)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn error(err: sqlx::Error) -> DbError {
        Self::classify(err)
    }
}

/// SQLite's result codes by class. sqlx reports the extended code, whose low
/// byte is the primary code.
fn class_of(code: &str) -> ErrorClass {
    let Ok(extended) = code.parse::<i32>() else { return ErrorClass::Other };
    match extended & 0xff {
        // CONSTRAINT
        19 => ErrorClass::Constraint,
        // TOOBIG, MISMATCH, RANGE
        18 | 20 | 25 => ErrorClass::InvalidData,
        // BUSY, LOCKED: the write lock stayed taken past the busy timeout.
        // INTERRUPT: the sandbox stopped a statement past its deadline.
        5 | 6 | 9 => ErrorClass::Busy,
        // AUTH: the sandbox's authorizer refused the statement.
        23 => ErrorClass::Forbidden,
        // NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
        7 | 8 | 10 | 11 | 13 | 14 | 26 => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

#[cfg(test)]
mod tests;
