//! What a statement may do on a SQLite connection, enforced by SQLite
//! itself. Every connection gets, when it opens:
//!
//! - an authorizer, consulted while each statement is prepared: a
//!   component's statement may only SELECT, INSERT, UPDATE and DELETE (and
//!   on a reader only SELECT) the tables of its grant in the main database.
//!   SQLite asks it for the foreign-key checks and actions too, so a grant
//!   that writes a table needs the tables whose keys refer to it;
//!   PRAGMA, ATTACH, VACUUM, DDL, transaction control and the catalog are
//!   refused; so are a few functions that reach outside SQL. The host's own
//!   statements pass;
//! - a progress handler that interrupts a statement once its request's
//!   deadline has passed;
//! - defensive mode (no `writable_schema`, no shadow-table writes), no
//!   extension loading, untrusted schema, no attached databases at all, and
//!   (where components run) bounded strings, blobs, rows, columns and
//!   patterns, so that neither a result nor one function call can grow
//!   large between two deadline checks.
//!
//! A prepared statement is authorized once, when it is prepared, and sqlx
//! keeps prepared statements by their text: so a component's SQL is
//! prefixed with its name ([`statement_text`]) and never meets a statement
//! prepared for the host or for another component.

use std::collections::BTreeSet;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use libsqlite3_sys as ffi;
use sqlx::SqliteConnection;

use crate::storage::{Caller, DbError, Grant};

/// Virtual-machine steps between two deadline checks: microseconds of work.
const PROGRESS_STEPS: i32 = 1000;

/// Where components' statements run, the longest string or blob (and row) a
/// connection makes: the API's body limit, far above any of the service's
/// records. It also bounds what one call of a function that is quadratic in
/// its arguments' lengths (`instr`, `replace`) takes between two deadline
/// checks: milliseconds.
const MAX_LENGTH: c_int = 64 << 10;
/// … the most columns a result may have: a row is at most this many values
/// of `MAX_LENGTH`.
const MAX_COLUMNS: c_int = 64;
/// … the longest `LIKE` or `GLOB` pattern.
const MAX_PATTERN: c_int = 1024;
/// The longest statement.
const MAX_SQL: c_int = 1 << 20;

/// Table-valued functions a statement may read like a table (the schema's
/// triggers use them to keep `pet_tags`).
const TABLE_FUNCTIONS: &[&str] = &["json_each", "json_tree"];

/// Functions that reach outside SQL (files, extensions, tokenizers).
const REFUSED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"];

/// One connection's sandbox: whose statement runs on it now. Set before
/// each statement by the one caller the connection is lent to.
#[derive(Default)]
pub(super) struct Sandbox {
    /// The running statement's component; `None` while the host's runs.
    grant: ArcSwapOption<Grant>,
    /// When the running statement must stop, in nanoseconds after
    /// [`epoch`]; 0 for none.
    deadline: AtomicU64,
    /// Whether the connection is a reader (no writes, even granted ones).
    read_only: bool,
    /// The schema's tables and views, lower-case: a name SQLite reports
    /// without its database is one of these, or the statement's own (a
    /// common table expression, a subquery).
    tables: BTreeSet<String>,
    /// Why the last statement was refused, for its error.
    refused: Mutex<Option<String>>,
}

impl Sandbox {
    /// The statement about to run is `caller`'s.
    pub(super) fn enter(&self, caller: &Caller) {
        match caller {
            Caller::Host => {
                self.grant.store(None);
                self.deadline.store(0, Ordering::Release);
            }
            Caller::Component { grant, .. } => {
                self.grant.store(Some(grant.clone()));
                let deadline = caller.deadline().unwrap_or_else(tokio::time::Instant::now);
                let nanos = deadline.into_std().saturating_duration_since(epoch()).as_nanos();
                self.deadline.store(u64::try_from(nanos).unwrap_or(u64::MAX).max(1), Ordering::Release);
            }
        }
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// The error a refused or interrupted statement reports: SQLite says
    /// only "not authorized" or "interrupted"; this says what and why.
    pub(super) fn explain(&self, err: DbError) -> DbError {
        let reason = self.refused.lock().unwrap_or_else(PoisonError::into_inner).take();
        match (err, reason) {
            (DbError::Forbidden(_), Some(reason)) => DbError::Forbidden(reason),
            (DbError::Busy(_), Some(reason)) => DbError::Busy(reason),
            (err, _) => err,
        }
    }

    fn refuse(&self, reason: String) {
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// Whether the running statement may go on (the progress handler).
    fn may_continue(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        if deadline == 0 || nanos_since_epoch() < deadline {
            return true;
        }
        self.refuse("the request's deadline passed while the statement ran".into());
        false
    }
}

/// Which database a connection is to, for its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The service's data, where components' statements run.
    Data,
    /// The registry, the host's alone (it holds whole components).
    Registry,
}

/// Set up `conn`'s sandbox (see the module's doc); `read_only` for a reader.
pub(super) async fn install(
    conn: &mut SqliteConnection,
    read_only: bool,
    purpose: Purpose,
) -> Result<Arc<Sandbox>, DbError> {
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT lower(name) FROM sqlite_schema WHERE type IN ('table', 'view')")
            .fetch_all(&mut *conn)
            .await
            .map_err(super::Sqlite::classify)?;
    let tables = tables.into_iter().map(|(name,)| name).collect();
    let sandbox = Arc::new(Sandbox { read_only, tables, ..Sandbox::default() });
    let mut handle = conn.lock_handle().await.map_err(super::Sqlite::classify)?;
    let db = handle.as_raw_handle().as_ptr();
    let configs = [
        (ffi::SQLITE_DBCONFIG_DEFENSIVE, 1),
        (ffi::SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0),
        (ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0),
    ];
    // SAFETY: `db` is the connection's handle, locked out of sqlx's worker
    // thread while `handle` lives, so nothing else uses it during these
    // calls. The authorizer's data pointer is the `Sandbox`, which the
    // progress handler's closure below keeps alive for as long as the
    // connection (sqlx drops that closure when it closes the connection,
    // after which nothing is prepared on it).
    unsafe {
        for (op, value) in configs {
            if ffi::sqlite3_db_config(db, op, value as c_int, ptr::null_mut::<c_int>()) != ffi::SQLITE_OK {
                return Err(DbError::Other(format!("cannot set SQLite option {op} on a connection")));
            }
        }
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_SQL_LENGTH, MAX_SQL);
        if purpose == Purpose::Data {
            ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, MAX_LENGTH);
            ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_COLUMN, MAX_COLUMNS);
            ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, MAX_PATTERN);
        }
        let data = Arc::as_ptr(&sandbox).cast_mut().cast::<c_void>();
        if ffi::sqlite3_set_authorizer(db, Some(authorize), data) != ffi::SQLITE_OK {
            return Err(DbError::Other("cannot install the SQLite authorizer".into()));
        }
    }
    let kept = sandbox.clone();
    handle.set_progress_handler(PROGRESS_STEPS, move || kept.may_continue());
    Ok(sandbox)
}

/// The text a statement is prepared (and cached) under: a component's is
/// prefixed with its name, so that it never reuses a statement another
/// caller's grant authorized.
pub(super) fn statement_text(caller: &Caller, sql: &str) -> String {
    match caller.grant() {
        None => sql.to_string(),
        Some(grant) => format!("/*{}*/ {sql}", grant.component()),
    }
}

/// SQLite's authorizer callback (`sqlite3_set_authorizer`).
unsafe extern "C" fn authorize(
    data: *mut c_void,
    action: c_int,
    first: *const c_char,
    second: *const c_char,
    database: *const c_char,
    inner: *const c_char,
) -> c_int {
    // SAFETY: `data` is the connection's `Sandbox` (see `install`).
    let sandbox = unsafe { &*data.cast::<Sandbox>() };
    let grant = sandbox.grant.load();
    let Some(grant) = grant.as_deref() else { return ffi::SQLITE_OK };
    // SAFETY: SQLite passes NUL-terminated strings or NULL.
    let text = |p: *const c_char| if p.is_null() { None } else { unsafe { CStr::from_ptr(p) }.to_str().ok() };
    let asked =
        Access { action, first: text(first), second: text(second), database: text(database), inner: text(inner) };
    // Never unwind into SQLite; a panic refuses.
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(grant, sandbox, &asked)));
    match decided {
        Ok(Ok(())) => ffi::SQLITE_OK,
        Ok(Err(reason)) => {
            sandbox.refuse(format!("{} may not {reason}", grant.component()));
            ffi::SQLITE_DENY
        }
        Err(_) => ffi::SQLITE_DENY,
    }
}

/// One question the authorizer is asked (its arguments, by name).
#[derive(Debug)]
struct Access<'a> {
    action: c_int,
    first: Option<&'a str>,
    second: Option<&'a str>,
    database: Option<&'a str>,
    /// The trigger or view the access comes from, if any.
    inner: Option<&'a str>,
}

/// Whether a component holding `grant` may do `asked` on the connection of
/// `sandbox`; why not, if not.
fn decide(grant: &Grant, sandbox: &Sandbox, asked: &Access) -> Result<(), String> {
    let read_only = sandbox.read_only;
    // The schema's own triggers (components can create none) keep derived
    // tables in step with the ones the component writes.
    if asked.inner.is_some() {
        return Ok(());
    }
    let table = || asked.first.unwrap_or("");
    match asked.action {
        ffi::SQLITE_SELECT | ffi::SQLITE_RECURSIVE => Ok(()),
        ffi::SQLITE_READ if TABLE_FUNCTIONS.contains(&table()) => Ok(()),
        ffi::SQLITE_READ if asked.database.is_none() && is_the_statements_own(sandbox, table()) => Ok(()),
        ffi::SQLITE_READ => reach(grant, "read", table(), asked.database),
        ffi::SQLITE_INSERT | ffi::SQLITE_UPDATE | ffi::SQLITE_DELETE if read_only => {
            Err(format!("write {} in a read-only statement (a SELECT with more after it)", table()))
        }
        ffi::SQLITE_INSERT | ffi::SQLITE_UPDATE | ffi::SQLITE_DELETE => reach(grant, "write", table(), asked.database),
        ffi::SQLITE_FUNCTION => match asked.second {
            Some(name) if REFUSED_FUNCTIONS.iter().any(|f| name.eq_ignore_ascii_case(f)) => {
                Err(format!("call {name}()"))
            }
            _ => Ok(()),
        },
        other => Err(format!("run {}", action_name(other, asked.first))),
    }
}

/// A name SQLite reports without its database (a table the statement names
/// but reads no column of, as in `count(*)`) is the statement's own when it
/// is no table or view of the schema and none of SQLite's built-in tables.
fn is_the_statements_own(sandbox: &Sandbox, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let built_in = ["sqlite_", "pragma_", "dbstat"].iter().any(|p| name.starts_with(p));
    !built_in && !sandbox.tables.contains(&name)
}

fn reach(grant: &Grant, verb: &str, table: &str, database: Option<&str>) -> Result<(), String> {
    // Unqualified, and a real table (`is_the_statements_own` said): the main
    // database's, as SQLite resolves it with nothing attached.
    let database = database.or(Some("main"));
    if database != Some("main") {
        return Err(format!("{verb} {table} in database {}", database.unwrap_or("?")));
    }
    if grant.allows(table) { Ok(()) } else { Err(format!("{verb} table {table}: not among its tables in routes.toml")) }
}

/// What an authorizer action is, for messages.
fn action_name(action: c_int, first: Option<&str>) -> String {
    let what = match action {
        ffi::SQLITE_PRAGMA => return format!("PRAGMA {}", first.unwrap_or("")),
        ffi::SQLITE_ATTACH => "ATTACH",
        ffi::SQLITE_DETACH => "DETACH",
        ffi::SQLITE_TRANSACTION => "BEGIN, COMMIT or ROLLBACK (the host manages transactions)",
        ffi::SQLITE_SAVEPOINT => "SAVEPOINT",
        ffi::SQLITE_ANALYZE => "ANALYZE",
        ffi::SQLITE_REINDEX => "REINDEX",
        ffi::SQLITE_ALTER_TABLE => "ALTER TABLE",
        ffi::SQLITE_CREATE_VTABLE | ffi::SQLITE_DROP_VTABLE => "CREATE or DROP VIRTUAL TABLE",
        ffi::SQLITE_COPY => "COPY",
        ffi::SQLITE_CREATE_INDEX..=ffi::SQLITE_CREATE_VIEW | ffi::SQLITE_DROP_INDEX..=ffi::SQLITE_DROP_VIEW => {
            "schema changes (CREATE, DROP)"
        }
        _ => "this statement",
    };
    what.to_string()
}

/// The moment deadlines are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
