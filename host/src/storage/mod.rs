//! Storage: the service's database behind one small API (query, execute,
//! transactions) with backend-neutral values and errors. The host's
//! `database` interface is a thin layer over this; nothing here knows WIT.
//!
//! # Layout
//! - [`backend`]: the trait each backend implements;
//! - [`column`]: typed reads of a row's columns, for the host's own queries;
//! - `sql`: the sqlx code the real backends share;
//! - `sqlite`, `postgres`: each backend's own knowledge (connecting, locking,
//!   decoding, its error codes);
//! - [`mock`] (tests only): a scripted backend, to test the layers above
//!   without a database.

pub mod backend;
pub mod column;
#[cfg(test)]
pub mod mock;
mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendTransaction};

use thiserror::Error;

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Boolean(bool),
}

/// Rows of a query. `columns` is empty when there are no rows.
#[derive(Debug, Default)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Why a statement failed, in the classes a handler must tell apart. Each
/// backend sorts its own error codes into them (`sqlite::class_of`,
/// `postgres::class_of`); failures that are not the database's answer
/// (a pool timeout, a broken socket) are sorted here.
#[derive(Debug, Error)]
pub enum DbError {
    /// A constraint refused the write: the client's fault.
    #[error("constraint violation: {0}")]
    Constraint(String),
    /// A value the database cannot hold or compute with: the client's fault.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The transaction lost to a concurrent one (serialization failure,
    /// deadlock) and was rolled back: running it again is expected to work.
    #[error("transaction aborted by contention: {0}")]
    Contention(String),
    /// Waiting for a lock or a statement took too long.
    #[error("database busy: {0}")]
    Busy(String),
    /// The database cannot be reached or cannot work (down, shutting down,
    /// out of disk or connections).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: bad SQL, a type that cannot be carried, a bug.
    #[error("database error: {0}")]
    Other(String),
}

/// The class of a database error code, as a backend reads its codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    Constraint,
    InvalidData,
    Contention,
    Busy,
    Unavailable,
    Other,
}

/// Sort a sqlx error; `class_of` reads the backend's own error codes.
pub(crate) fn classify(err: sqlx::Error, class_of: fn(&str) -> ErrorClass) -> DbError {
    let class = match &err {
        sqlx::Error::Database(db) => db.code().map_or(ErrorClass::Other, |code| class_of(&code)),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => ErrorClass::Unavailable,
        // A value the driver could not encode for the database.
        sqlx::Error::Encode(_) => ErrorClass::InvalidData,
        _ => ErrorClass::Other,
    };
    let message = match &err {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    match class {
        ErrorClass::Constraint => DbError::Constraint(message),
        ErrorClass::InvalidData => DbError::InvalidData(message),
        ErrorClass::Contention => DbError::Contention(message),
        ErrorClass::Busy => DbError::Busy(message),
        ErrorClass::Unavailable => DbError::Unavailable(message),
        ErrorClass::Other => DbError::Other(message),
    }
}

/// How to connect, for either backend.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// How long a call waits for a pooled connection before `unavailable`.
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` (SQLite has none).
    pub statement_timeout: Duration,
    /// Credentials for a URL that carries none (PostgreSQL).
    pub user: Option<String>,
    pub password: Option<String>,
}

/// The configured backend's connection pool; cheap to clone.
#[derive(Clone)]
pub struct Database(Arc<dyn Backend>);

/// An open transaction; dropping it rolls back.
pub struct Transaction(Box<dyn BackendTransaction>);

impl Database {
    /// Open the database named by `url`: `sqlite:` (opened and migrated
    /// before this returns) or `postgres://` (connected and migrated in the
    /// background, so the host starts while the database comes up).
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Database, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Database::from_backend(sqlite::Sqlite::open(url, options).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::from_backend(postgres::Postgres::open(url, options).await?))
        } else {
            Err(DbError::Other(format!("unsupported database URL scheme in {}", redact(url))))
        }
    }

    pub fn from_backend(backend: impl Backend) -> Database {
        Database(Arc::new(backend))
    }

    /// Run a statement on a connection of its own (the pool's, or SQLite's
    /// writer), given back before this returns: see [`handed_back`].
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        handed_back(self.0.query(sql, params).await).await
    }

    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        handed_back(self.0.execute(sql, params).await).await
    }

    /// Begin a write transaction. sqlx's `begin` is not cancel-safe: a
    /// caller dropped after BEGIN ran but before it got the transaction (a
    /// client gone, a handler past its deadline) left a connection inside a
    /// transaction nobody owned, holding SQLite's write lock, and every later
    /// write failed. So BEGIN runs to completion on a task of its own; if
    /// nobody takes the transaction, dropping it rolls it back.
    pub async fn begin(&self) -> Result<Transaction, DbError> {
        let backend = self.0.clone();
        to_completion(async move { backend.begin().await.map(Transaction) }).await
    }

    /// A read-only transaction that sees one snapshot for all its reads
    /// (a backup's consistency).
    pub async fn begin_snapshot(&self) -> Result<Transaction, DbError> {
        self.0.begin_snapshot().await.map(Transaction)
    }

    /// Wait until the database answers and its schema is migrated.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), DbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.ping().await {
                Ok(()) => return Ok(()),
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Connections open in the pool, and how many of them are idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        self.0.pool_stats()
    }

    /// Wake-ups when `channel` is notified (see [`Backend::subscribe`]).
    pub fn subscribe(&self, channel: &'static str) -> Option<tokio::sync::mpsc::Receiver<()>> {
        self.0.subscribe(channel)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.query("SELECT 1", Vec::new()).await.map(drop)
    }
}

impl Transaction {
    pub async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        self.0.query(sql, params).await
    }

    pub async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.0.execute(sql, params).await
    }

    /// After rows were inserted with explicit ids (a restore), make the next
    /// generated id follow the largest one.
    pub async fn after_restore(&mut self) -> Result<(), DbError> {
        self.0.after_restore().await
    }

    /// Wake up the subscribers of `channel` once this transaction commits.
    pub async fn notify(&mut self, channel: &str) -> Result<(), DbError> {
        self.0.notify(channel).await
    }

    /// Commit. Once started, a commit finishes even if its caller is
    /// dropped (see [`Database::begin`]), so its outcome never depends on
    /// whether the client waited for it.
    pub async fn commit(self) -> Result<(), DbError> {
        handed_back(to_completion(self.0.commit()).await).await
    }
}

/// `result`, after a yield. The connection a statement used has just been
/// given back, and whoever waited for it (the next writer on SQLite, the
/// next statement at a full pool) was woken into this worker thread's
/// next-task slot, which no other thread may take: without the yield it
/// started only after the rest of this request (the guest's answer, the
/// instance's teardown, the response write), all of it inside the next
/// statement's wait, and on SQLite inside every write's turn. Measured with
/// bench/ab on SQLite: POST +28–30% req/s, GET by id +8–12%
/// (docs/performance.md, round 4).
async fn handed_back<T>(result: T) -> T {
    tokio::task::yield_now().await;
    result
}

/// Run `work` on a task of its own, so dropping the caller cannot cut it short.
async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = Result<T, DbError>> + Send + 'static,
) -> Result<T, DbError> {
    tokio::spawn(work).await.map_err(|e| DbError::Other(format!("database task failed: {e}")))?
}

/// Whether a statement only reads (a plain SELECT); anything else may write.
pub fn is_select(sql: &str) -> bool {
    sql.trim_start().get(..6).is_some_and(|word| word.eq_ignore_ascii_case("select"))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://petstore.db"), "sqlite://petstore.db");
    }
}
