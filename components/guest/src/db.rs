//! Database access for handlers: one [`Sql`] trait over plain calls and
//! transactions, rows read into records through [`FromRow`], and the mapping
//! of database errors onto API errors (the SQL detail is logged, never
//! answered).

use crate::bindings::petstore::api::database::{self, Error, RowSet, Transaction};
use crate::bindings::petstore::api::log::Level;
use crate::error::ApiError;

pub use crate::bindings::petstore::api::database::{SqlDialect, Value};

/// The SQL the host's database speaks.
pub fn dialect() -> SqlDialect {
    database::dialect()
}

/// A record read from one row, column by column.
pub trait FromRow: Sized {
    fn from_row(row: Row<'_>) -> Result<Self, ApiError>;
}

/// A single integer column, e.g. `COUNT(*)`.
impl FromRow for i64 {
    fn from_row(row: Row<'_>) -> Result<Self, ApiError> {
        row.int(0)
    }
}

/// Run SQL either directly ([`Db`]) or inside a [`Transaction`].
pub trait Sql {
    /// A statement that returns rows (SELECT, or anything with RETURNING).
    fn rows(&self, sql: &str, params: &[Value]) -> Result<RowSet, ApiError>;
    /// A statement run for its effect: the number of rows affected.
    fn run(&self, sql: &str, params: &[Value]) -> Result<u64, ApiError>;

    /// The first row as a `T`, or `None` when there is none.
    fn optional<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<Option<T>, ApiError> {
        self.rows(sql, params)?.rows.first().map(|row| T::from_row(Row(row))).transpose()
    }

    /// The one row a statement always returns (`INSERT … RETURNING`,
    /// `COUNT(*)`): none is a bug.
    fn one<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<T, ApiError> {
        self.optional(sql, params)?.ok_or_else(|| unexpected("a row", None))
    }

    /// Every row as a `T`.
    fn all<T: FromRow>(&self, sql: &str, params: &[Value]) -> Result<Vec<T>, ApiError> {
        self.rows(sql, params)?.rows.iter().map(|row| T::from_row(Row(row))).collect()
    }
}

/// The database outside any transaction.
pub struct Db;

impl Sql for Db {
    fn rows(&self, sql: &str, params: &[Value]) -> Result<RowSet, ApiError> {
        database::query(sql, params).map_err(into_api_error)
    }
    fn run(&self, sql: &str, params: &[Value]) -> Result<u64, ApiError> {
        database::execute(sql, params).map_err(into_api_error)
    }
}

impl Sql for Transaction {
    fn rows(&self, sql: &str, params: &[Value]) -> Result<RowSet, ApiError> {
        Transaction::query(self, sql, params).map_err(into_api_error)
    }
    fn run(&self, sql: &str, params: &[Value]) -> Result<u64, ApiError> {
        Transaction::execute(self, sql, params).map_err(into_api_error)
    }
}

/// Begin a transaction; dropping it without [`commit`] rolls it back.
pub fn begin() -> Result<Transaction, ApiError> {
    Transaction::begin().map_err(into_api_error)
}

pub fn commit(tx: Transaction) -> Result<(), ApiError> {
    Transaction::commit(tx).map_err(into_api_error)
}

/// Map a database error to the client's answer by whose fault it is:
/// constraint violations the handler did not foresee are conflicts (409),
/// values the database refused are the client's (422); only contention and
/// outages answer 503, which invites a retry; a statement the host refused
/// (`forbidden`) is this component's bug: 500.
pub fn into_api_error(err: Error) -> ApiError {
    let (kind, detail) = match &err {
        Error::ConstraintViolation(d) => ("constraint_violation", d),
        Error::InvalidData(d) => ("invalid_data", d),
        Error::Busy(d) => ("busy", d),
        Error::Unavailable(d) => ("unavailable", d),
        Error::Forbidden(d) => ("forbidden", d),
        Error::Other(d) => ("other", d),
    };
    crate::log(Level::Warn, "database error", &[("kind", kind), ("detail", detail)]);
    match err {
        Error::ConstraintViolation(_) => ApiError::Conflict("the change conflicts with existing data".into()),
        Error::InvalidData(_) => ApiError::InvalidData,
        Error::Busy(_) | Error::Unavailable(_) => ApiError::Unavailable,
        // The component's own SQL reached outside its tables: a bug here.
        Error::Forbidden(_) | Error::Other(_) => ApiError::Internal,
    }
}

/// Typed readers for one row. A type the handler did not expect is a bug: 500.
#[derive(Clone, Copy)]
pub struct Row<'a>(pub &'a [Value]);

impl Row<'_> {
    pub fn int(&self, i: usize) -> Result<i64, ApiError> {
        match self.0.get(i) {
            Some(Value::Integer(n)) => Ok(*n),
            other => Err(unexpected(&format!("an integer in column {i}"), other)),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, ApiError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, ApiError> {
        match self.0.get(i) {
            Some(Value::Text(s)) => Ok(s.clone()),
            other => Err(unexpected(&format!("text in column {i}"), other)),
        }
    }
}

fn unexpected(expected: &str, found: Option<&Value>) -> ApiError {
    crate::log(Level::Error, "unexpected database answer", &[("expected", expected), ("found", &format!("{found:?}"))]);
    ApiError::Internal
}

/// `$n` placeholders `$from..$from+count`, comma-separated.
pub fn placeholders(from: usize, count: usize) -> String {
    (from..from + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}
