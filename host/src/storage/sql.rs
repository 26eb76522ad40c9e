//! The sqlx code both real backends share: binding parameters, running a
//! statement, and reading its rows with the backend's own decoder, within a
//! size limit when a component asked.

use futures_util::StreamExt;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column, Database, Encode, Executor, IntoArguments, Row, Type};

use super::{DbError, ErrorClass, RowSet, Value};

/// How a backend speaks to sqlx: its driver, how it binds parameters,
/// decodes a row and sorts errors.
pub trait Dialect {
    type Db: Database;
    /// `sql` with `params` bound, in order (each backend calls [`bind`] with
    /// the type its driver sends NULL as).
    fn bind(sql: String, params: Vec<Value>) -> Bound<Self::Db>;
    fn decode_row(row: &<Self::Db as Database>::Row) -> Result<Vec<Value>, DbError>;
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
    fn error(err: sqlx::Error) -> DbError;
}

/// A statement with its parameters bound, ready to run.
pub type Bound<DB> = Query<'static, DB, <DB as Database>::Arguments>;

/// Bind `params` in order; `Value::Null` binds as a `Null` that is `None`.
/// The statement text is the caller's: components send SQL of their own by
/// design (the database confines them, not the text).
pub fn bind<DB: Database, Null>(sql: String, params: Vec<Value>) -> Bound<DB>
where
    Option<Null>: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    f64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Vec<u8>: for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut q = sqlx::query::<DB>(AssertSqlSafe(sql));
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<Null>),
            Value::Integer(n) => q.bind(n),
            Value::Real(f) => q.bind(f),
            Value::Text(s) => q.bind(s),
            Value::Blob(b) => q.bind(b),
            Value::Boolean(b) => q.bind(b),
        };
    }
    q
}

/// Run a statement that returns rows on `executor`; with a `limit`, refuse
/// a result whose values add up to more than that many bytes (the rest is
/// not fetched).
pub async fn query<'c, D: Dialect, E>(
    executor: E,
    sql: String,
    params: Vec<Value>,
    limit: Option<usize>,
) -> Result<RowSet, DbError>
where
    E: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
{
    let mut stream = D::bind(sql, params).fetch(executor);
    let (mut columns, mut rows, mut size) = (Vec::new(), Vec::new(), 0usize);
    while let Some(row) = stream.next().await {
        let row = row.map_err(D::error)?;
        if columns.is_empty() {
            columns = row.columns().iter().map(|c| c.name().to_string()).collect();
        }
        let values = D::decode_row(&row)?;
        size += values.iter().map(Value::size).sum::<usize>();
        if let Some(limit) = limit.filter(|limit| size > *limit) {
            return Err(DbError::Forbidden(format!("the result is larger than {} MiB", limit >> 20)));
        }
        rows.push(values);
    }
    Ok(RowSet { columns, rows })
}

/// Run a statement for its effect on `executor`: the rows it affected.
pub async fn execute<'c, D: Dialect, E>(executor: E, sql: String, params: Vec<Value>) -> Result<u64, DbError>
where
    E: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
{
    let done = D::bind(sql, params).execute(executor).await.map_err(D::error)?;
    Ok(D::rows_affected(&done))
}

/// Sort a sqlx error; `class_of` reads the backend's own error codes.
pub(super) fn classify(err: sqlx::Error, class_of: fn(&str) -> ErrorClass) -> DbError {
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
        ErrorClass::Forbidden => DbError::Forbidden(message),
        ErrorClass::Other => DbError::Other(message),
    }
}
