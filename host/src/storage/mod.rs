//! Storage: the service's databases behind one small API (query, execute,
//! transactions) with backend-neutral values and errors. Nothing here knows
//! WIT.
//!
//! Two kinds of caller use it ([`Caller`]). The host itself (migrations,
//! the component registry, backups, health checks) has every right its
//! database role has. A handler component reaches only the tables its
//! [`Grant`] lists, with plain queries and DML, and its statement stops at
//! its request's deadline: the database enforces that, not the component
//! (a login role of the components' own on PostgreSQL, an authorizer and a
//! progress handler on every SQLite connection; see `docs/security.md`).
//! The component registry lives where component statements cannot reach:
//! its own schema on PostgreSQL, its own file on SQLite ([`Databases`]).
//!
//! # Layout
//! - [`backend`]: the trait each backend implements;
//! - [`grant`]: what one component may touch, and who calls;
//! - [`column`]: typed reads of a row's columns, for the host's own queries;
//! - `sql`: the sqlx code the real backends share (and the only place,
//!   with the backends, that knows sqlx);
//! - `statement`: a component's SQL read as its database reads it (its
//!   kind, one statement or several, the names it uses); `screen`: what
//!   the host refuses before the database sees it;
//! - `sqlite/`, `postgres/`: each backend's own knowledge (connecting,
//!   locking, decoding, its error codes, how it confines components);
//! - [`mock`] (tests only): a scripted backend, to test the layers above
//!   without a database.

pub mod backend;
pub mod column;
pub mod grant;
#[cfg(test)]
pub mod mock;
mod postgres;
mod screen;
mod sql;
mod sqlite;
mod statement;

use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendTransaction};
pub use grant::{Caller, Grant};
pub use statement::Syntax;
pub use statement::summary as statement_summary;

use thiserror::Error;

/// The most a component's query may return, counted as the values' sizes:
/// the host holds it all before the guest gets it, so one `SELECT` over a
/// generated series must not take the host's memory.
pub const COMPONENT_RESULT_LIMIT: usize = 16 << 20;

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

impl Value {
    /// About how many bytes the value takes, for [`COMPONENT_RESULT_LIMIT`].
    fn size(&self) -> usize {
        16 + match self {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        }
    }
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
    /// Waiting for a lock or a statement took too long (or the request's
    /// deadline passed while it ran).
    #[error("database busy: {0}")]
    Busy(String),
    /// The database cannot be reached or cannot work (down, shutting down,
    /// out of disk or connections).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement reaches outside what its caller may touch: a table its
    /// grant does not list, the schema, a session setting, a file. A bug
    /// (or worse) in the component that sent it.
    #[error("statement refused: {0}")]
    Forbidden(String),
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
    Forbidden,
    Other,
}

/// How to connect, for either backend.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub(crate) max_connections: u32,
    /// How long a call waits for a pooled connection before `unavailable`.
    pub(crate) acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` (SQLite has none).
    pub(crate) statement_timeout: Duration,
    /// Credentials for a URL that carries none (PostgreSQL).
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// How components reach the database; `None` where none run (the
    /// backup commands).
    pub(crate) components: Option<ComponentAccess>,
}

/// What the components together may reach, set up when the database opens.
#[derive(Debug, Clone, Default)]
pub struct ComponentAccess {
    /// PostgreSQL: the login role components' statements run as (its own
    /// `db-component-credentials`), and its password.
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    /// Every grant: the host gives the component role exactly the union of
    /// their tables, and the screen keeps each component to its own.
    pub(crate) grants: Vec<Grant>,
}

/// The configured backend's connections; cheap to clone.
#[derive(Clone)]
pub struct Database(Arc<dyn Backend>);

/// What [`Database::open`] opens: the service's data, where components'
/// statements run, and the component registry, which only the host reaches.
/// On PostgreSQL both are one database (the registry in a schema of its
/// own); on SQLite the registry is a file of its own beside the data.
pub struct Databases {
    pub data: Database,
    pub registry: Database,
}

/// An open transaction; dropping it rolls back.
pub struct Transaction(Box<dyn BackendTransaction>);

impl Database {
    /// Open the databases named by `url`: `sqlite:` (opened and migrated
    /// before this returns) or `postgres://` (connected, migrated and its
    /// component role set up in the background, so the host starts while
    /// the database comes up).
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Databases, DbError> {
        if url.starts_with("sqlite:") {
            let (data, registry) = sqlite::Sqlite::open(url, options).await?;
            Ok(Databases { data: Database::from_backend(data), registry: Database::from_backend(registry) })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let db = Database::from_backend(postgres::Postgres::open(url, options).await?);
            Ok(Databases { data: db.clone(), registry: db })
        } else {
            Err(DbError::Other(format!("unsupported database URL scheme in {}", redact(url))))
        }
    }

    pub fn from_backend(backend: impl Backend) -> Database {
        Database(Arc::new(backend))
    }

    /// Run a statement as the host, on a connection of its own, given back
    /// before this returns: see [`handed_back`].
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        self.query_as(&Caller::Host, sql, params).await
    }

    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.execute_as(&Caller::Host, sql, params).await
    }

    /// Run a statement for `caller` (a component: within its grant, until
    /// its deadline).
    pub async fn query_as(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        handed_back(self.0.query(caller, sql, params).await).await
    }

    pub async fn execute_as(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        handed_back(self.0.execute(caller, sql, params).await).await
    }

    /// Begin a write transaction as the host.
    pub async fn begin(&self) -> Result<Transaction, DbError> {
        self.begin_as(Caller::Host).await
    }

    /// Begin a write transaction whose statements run for `caller`. sqlx's
    /// `begin` is not cancel-safe: a caller dropped after BEGIN ran but
    /// before it got the transaction (a client gone, a handler past its
    /// deadline) left a connection inside a transaction nobody owned,
    /// holding SQLite's write lock, and every later write failed. So BEGIN
    /// runs to completion on a task of its own; if nobody takes the
    /// transaction, dropping it rolls it back.
    pub async fn begin_as(&self, caller: Caller) -> Result<Transaction, DbError> {
        let backend = self.0.clone();
        to_completion(async move { backend.begin(&caller).await.map(Transaction) }).await
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

    /// Connections open for components' statements, and how many are idle.
    /// The SQL this database speaks.
    pub fn syntax(&self) -> Syntax {
        self.0.syntax()
    }

    pub fn pool_stats(&self) -> (u32, usize) {
        self.0.pool_stats()
    }

    /// Wake-ups when `channel` is notified (see [`Backend::subscribe`]).
    pub fn subscribe(&self, channel: &'static str) -> Option<tokio::sync::mpsc::Receiver<()>> {
        self.0.subscribe(channel)
    }

    /// A cheap round trip on every kind of connection requests use, for
    /// readiness: `unavailable` until the database is migrated and set up.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.0.ping().await
    }
}

impl Transaction {
    pub async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        self.0.query(sql, params).await
    }

    pub async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.0.execute(sql, params).await
    }

    /// Before a restore writes its rows (see [`Transaction::after_restore`]).
    pub async fn before_restore(&mut self) -> Result<(), DbError> {
        self.0.before_restore().await
    }

    /// After rows were inserted with explicit ids (a restore), make the next
    /// generated id follow the largest one, and bring the counts up to date.
    pub async fn after_restore(&mut self) -> Result<(), DbError> {
        self.0.after_restore().await
    }

    /// Wake up the subscribers of `channel` once this transaction commits.
    pub async fn notify(&mut self, channel: &str) -> Result<(), DbError> {
        self.0.notify(channel).await
    }

    /// Commit. Once started, a commit finishes even if its caller is
    /// dropped (see [`Database::begin_as`]), so its outcome never depends on
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

/// When `caller` must have its answer: its deadline, or `wait` from now,
/// whichever comes first.
fn until(caller: &Caller, wait: Duration) -> tokio::time::Instant {
    let by_wait = tokio::time::Instant::now() + wait;
    caller.deadline().map_or(by_wait, |deadline| deadline.min(by_wait))
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
