//! The SQLite backend: WAL, a busy timeout, foreign keys on, and
//! `BEGIN IMMEDIATE` transactions so a read-then-write never deadlocks.
//! Write transactions queue for the one write lock in the process, first
//! come first served, instead of in SQLite's busy handler.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Column, Row, SqliteConnection, SqlitePool, TypeInfo, ValueRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ConnectOptions, DbError, ErrorClass, RowSet, Value, classify};

/// How long a writer waits for the write lock before answering `busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Sqlite {
    pool: SqlitePool,
    /// SQLite lets one write transaction run at a time. Waiting for it here
    /// is a FIFO queue; waiting in SQLite's busy handler is sleep-and-retry
    /// with back-off, which under load left the lock idle while writers
    /// slept (measured: POST p99 285 ms → see docs/performance.md).
    writer: Arc<Semaphore>,
}

/// A transaction; a write transaction also holds the write lock.
pub struct Transaction {
    pub tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _writer: Option<OwnedSemaphorePermit>,
}

impl Sqlite {
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Sqlite, DbError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| DbError::Other(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A connection to a local file cannot go stale the way a network
            // one can; pinging it on every acquire cost a round trip to the
            // connection's worker thread (two thread wake-ups) per statement.
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(error)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| DbError::Other(format!("migration failed: {e}")))?;
        Ok(Sqlite { pool, writer: Arc::new(Semaphore::new(1)) })
    }

    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        let mut conn = self.pool.acquire().await.map_err(error)?;
        query(&mut conn, sql, params).await
    }

    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let mut conn = self.pool.acquire().await.map_err(error)?;
        execute(&mut conn, sql, params).await
    }

    /// A write transaction. Waiting for the write lock longer than SQLite's
    /// own busy timeout is `busy`, as it was before the queue (e.g. a
    /// request that opens a second write transaction while it holds one).
    pub async fn begin(&self) -> Result<Transaction, DbError> {
        let writer = tokio::time::timeout(BUSY_TIMEOUT, self.writer.clone().acquire_owned())
            .await
            .map_err(|_| DbError::Busy("timed out waiting for the write lock".into()))?
            .map_err(|_| DbError::Unavailable("the database is closed".into()))?;
        Ok(Transaction { tx: self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(error)?, _writer: Some(writer) })
    }

    /// A transaction that takes no lock until it reads: in WAL mode its
    /// first read fixes the snapshot it sees, and writers are not blocked.
    pub async fn begin_deferred(&self) -> Result<Transaction, DbError> {
        Ok(Transaction { tx: self.pool.begin().await.map_err(error)?, _writer: None })
    }
}

fn bind(sql: &str, params: Vec<Value>) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<i64>),
            Value::Integer(n) => q.bind(n),
            Value::Real(f) => q.bind(f),
            Value::Text(s) => q.bind(s),
            Value::Blob(b) => q.bind(b),
            Value::Boolean(b) => q.bind(b),
        };
    }
    q
}

pub async fn query(conn: &mut SqliteConnection, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
    let rows = bind(sql, params).fetch_all(conn).await.map_err(error)?;
    let columns = match rows.first() {
        Some(row) => row.columns().iter().map(|c| c.name().to_string()).collect(),
        None => Vec::new(),
    };
    let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
    Ok(RowSet { columns, rows })
}

pub async fn execute(conn: &mut SqliteConnection, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
    Ok(bind(sql, params).execute(conn).await.map_err(error)?.rows_affected())
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
                    if row.column(i).type_info().name() == "BOOLEAN" {
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
        .map_err(error)
}

/// Sort a SQLite error (see [`class_of`]).
pub fn error(err: sqlx::Error) -> DbError {
    classify(err, class_of)
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
        5 | 6 => ErrorClass::Busy,
        // NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB
        7 | 8 | 10 | 11 | 13 | 14 | 26 => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_sort_by_their_primary_code() {
        assert_eq!(class_of("2067"), ErrorClass::Constraint, "SQLITE_CONSTRAINT_UNIQUE");
        assert_eq!(class_of("787"), ErrorClass::Constraint, "SQLITE_CONSTRAINT_FOREIGNKEY");
        assert_eq!(class_of("18"), ErrorClass::InvalidData);
        assert_eq!(class_of("5"), ErrorClass::Busy);
        assert_eq!(class_of("517"), ErrorClass::Busy, "SQLITE_BUSY_SNAPSHOT");
        assert_eq!(class_of("13"), ErrorClass::Unavailable, "SQLITE_FULL");
        assert_eq!(class_of("1"), ErrorClass::Other, "SQL error");
        assert_eq!(class_of("not a number"), ErrorClass::Other);
    }
}
