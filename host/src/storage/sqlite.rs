//! The SQLite backend: WAL, a busy timeout, foreign keys on. Reads use a
//! pool of connections; every write (a statement that is not a plain
//! SELECT, or a transaction, which is `BEGIN IMMEDIATE` so a read-then-write
//! never deadlocks) runs on the one writer connection, whose writers queue
//! first come first served instead of in SQLite's busy handler.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Executor, Row, SqliteConnection, SqlitePool, TypeInfo, ValueRef};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::backend::{Backend, BackendTransaction};
use super::sql::{self, Dialect};
use super::{ConnectOptions, DbError, ErrorClass, RowSet, Value, classify};
use sqlx::query::Query;

/// How long a writer waits for the write lock before answering `busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often WAL frames are copied back into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// WAL pages (4 KiB) that make a commit checkpoint: the WAL's bound, 16 MiB.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;

pub struct Sqlite {
    /// Connections for reads (and snapshots).
    readers: SqlitePool,
    /// SQLite lets one writer at a time. Waiting for this connection is a
    /// FIFO queue; waiting in SQLite's busy handler is sleep-and-retry with
    /// back-off, which under load left the lock idle while writers slept
    /// (measured: POST p99 285 ms → see docs/performance.md), and one
    /// connection kept for writes costs no pool round trip per statement.
    writer: Arc<Mutex<Writer>>,
}

/// The writer connection, and whether a transaction on it was left open
/// (its owner dropped it without committing): the next user rolls it back.
struct Writer {
    conn: SqliteConnection,
    in_transaction: bool,
}

impl Writer {
    /// The connection, with no transaction left over.
    async fn ready(&mut self) -> Result<&mut SqliteConnection, DbError> {
        if self.in_transaction {
            self.conn.execute("ROLLBACK").await.map_err(Sqlite::classify)?;
            self.in_transaction = false;
        }
        Ok(&mut self.conn)
    }
}

/// A write transaction holds the writer; a snapshot holds a reader.
enum Transaction {
    Write(OwnedMutexGuard<Writer>),
    Snapshot(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Sqlite {
    async fn connection_for(&self, sql: &str) -> Result<Statement, DbError> {
        if super::is_select(sql) {
            Ok(Statement::Read(self.readers.acquire().await.map_err(Self::classify)?))
        } else {
            Ok(Statement::Write(self.writer().await?))
        }
    }

    /// The writer, waited for in turn; longer than SQLite's own busy
    /// timeout is `busy`, as it was before the queue (e.g. a request that
    /// opens a second write transaction while it holds one).
    async fn writer(&self) -> Result<OwnedMutexGuard<Writer>, DbError> {
        tokio::time::timeout(BUSY_TIMEOUT, self.writer.clone().lock_owned())
            .await
            .map_err(|_| DbError::Busy("timed out waiting for the write lock".into()))
    }
}

#[async_trait]
impl Backend for Sqlite {
    /// Open (creating the file if needed) and migrate before returning: a
    /// local file, so failing fast is clearest.
    async fn open(url: &str, options: &ConnectOptions) -> Result<Sqlite, DbError> {
        let connect = SqliteConnectOptions::from_str(url)
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
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
        let readers = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A connection to a local file cannot go stale the way a network
            // one can; pinging it on every acquire cost a round trip to the
            // connection's worker thread (two thread wake-ups) per statement.
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
            .map_err(Self::classify)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&readers)
            .await
            .map_err(|e| DbError::Other(format!("migration failed: {e}")))?;
        let conn = SqliteConnection::connect_with(&connect).await.map_err(Self::classify)?;
        tokio::spawn(checkpoint_periodically(readers.clone()));
        Ok(Sqlite { readers, writer: Arc::new(Mutex::new(Writer { conn, in_transaction: false })) })
    }

    fn classify(err: sqlx::Error) -> DbError {
        classify(err, class_of)
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        let mut conn = self.connection_for(sql).await?;
        sql::query::<Self, _>(conn.ready().await?, sql, params).await
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let mut conn = self.connection_for(sql).await?;
        sql::execute::<Self, _>(conn.ready().await?, sql, params).await
    }

    async fn begin(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        let mut writer = self.writer().await?;
        writer.ready().await?.execute("BEGIN IMMEDIATE").await.map_err(Self::classify)?;
        writer.in_transaction = true;
        Ok(Box::new(Transaction::Write(writer)))
    }

    /// A transaction that takes no lock until it reads: in WAL mode its
    /// first read fixes the snapshot it sees, and writers are not blocked.
    async fn begin_snapshot(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        let tx = self.readers.begin().await.map_err(Self::classify)?;
        Ok(Box::new(Transaction::Snapshot(tx)))
    }

    /// The readers' pool, and the writer as one more connection.
    fn pool_stats(&self) -> (u32, usize) {
        let writer_idle = usize::from(self.writer.try_lock().is_ok());
        (self.readers.size() + 1, self.readers.num_idle() + writer_idle)
    }
}

/// Copy the WAL back into the database file every [`CHECKPOINT_INTERVAL`],
/// on a reader connection, until the pool closes. PASSIVE: it never waits
/// for readers or the writer, which go on meanwhile. It cannot rewind the
/// WAL while writes keep coming; the commit that reaches
/// [`WAL_AUTOCHECKPOINT_PAGES`] does, after copying what is left.
async fn checkpoint_periodically(readers: SqlitePool) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        if readers.is_closed() {
            return;
        }
        match readers.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(_) => {}
            Err(_) if readers.is_closed() => return,
            // Once per spell of failures, not ten times a second.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "WAL checkpoint failed; retrying every interval");
            }
            Err(_) => {}
        }
    }
}

/// The connection a statement outside a transaction runs on: a reader for
/// a plain SELECT (beside the writes), the writer for anything else.
enum Statement {
    Read(PoolConnection<sqlx::Sqlite>),
    Write(OwnedMutexGuard<Writer>),
}

impl Statement {
    async fn ready(&mut self) -> Result<&mut SqliteConnection, DbError> {
        match self {
            Statement::Read(conn) => Ok(conn),
            Statement::Write(writer) => writer.ready().await,
        }
    }
}

impl Transaction {
    fn conn(&mut self) -> &mut SqliteConnection {
        match self {
            Transaction::Write(writer) => &mut writer.conn,
            Transaction::Snapshot(tx) => tx,
        }
    }
}

/// SQLite's AUTOINCREMENT follows restored ids by itself: nothing to do
/// after a restore. A write transaction dropped without a commit is rolled
/// back by the writer's next user (see [`Writer::ready`]).
#[async_trait]
impl BackendTransaction for Transaction {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        sql::query::<Sqlite, _>(self.conn(), sql, params).await
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        sql::execute::<Sqlite, _>(self.conn(), sql, params).await
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        match *self {
            Transaction::Write(mut writer) => {
                let committed = writer.conn.execute("COMMIT").await.map_err(Sqlite::classify);
                if committed.is_ok() {
                    writer.in_transaction = false;
                }
                committed.map(drop)
            }
            Transaction::Snapshot(tx) => tx.commit().await.map_err(Sqlite::classify),
        }
    }
}

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;

    fn bind(sql: &str, params: Vec<Value>) -> Query<'_, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments<'_>> {
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

    const PAGE: u64 = 4096;

    async fn open_in(dir: &tempfile::TempDir) -> (Sqlite, std::path::PathBuf) {
        let path = dir.path().join("wal.db");
        let options = ConnectOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            user: None,
            password: None,
        };
        let db = Sqlite::open(&format!("sqlite://{}", path.display()), &options).await.expect("open");
        db.execute("CREATE TABLE filler (b BLOB NOT NULL)", vec![]).await.expect("table");
        (db, path)
    }

    /// Write about `pages` pages, a statement (and commit) per page.
    async fn write_pages(db: &Sqlite, pages: u64) {
        for _ in 0..pages {
            let blob = Value::Blob(vec![7; PAGE as usize - 200]);
            db.execute("INSERT INTO filler (b) VALUES ($1)", vec![blob]).await.expect("insert");
        }
    }

    fn size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// Fewer pages than a commit's own checkpoint waits for reach the
    /// database file anyway: the background checkpoint copies them.
    #[tokio::test]
    async fn written_pages_reach_the_database_file_without_a_commit_checkpointing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, path) = open_in(&dir).await;
        let before = size(&path);
        write_pages(&db, 500).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size(&path) < before + 400 * PAGE {
            assert!(std::time::Instant::now() < deadline, "the database file stayed at {} bytes", size(&path));
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        }
        let rows = db.query("SELECT count(*) FROM filler", vec![]).await.expect("count");
        assert_eq!(rows.rows[0][0], Value::Integer(500), "nothing lost");
    }

    /// Writes that never pause still leave the WAL bounded: the commit that
    /// reaches the mark rewinds it (a background checkpoint alone cannot).
    #[tokio::test]
    async fn the_wal_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, path) = open_in(&dir).await;
        let pages = 4 * u64::from(WAL_AUTOCHECKPOINT_PAGES);
        write_pages(&db, pages).await;
        let wal = size(&path.with_extension("db-wal"));
        // Twice the mark: a commit's checkpoint that meets the background
        // one running gives way, and the next commits try again; unbounded,
        // the WAL would hold all four marks' worth.
        let bound = 2 * u64::from(WAL_AUTOCHECKPOINT_PAGES) * (PAGE + 24);
        assert!(wal <= bound, "WAL is {wal} bytes after {pages} pages, bound {bound}");
        let rows = db.query("SELECT count(*) FROM filler", vec![]).await.expect("count");
        assert_eq!(rows.rows[0][0], Value::Integer(pages as i64), "nothing lost");
    }
}
