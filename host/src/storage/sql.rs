//! The sqlx code both real backends share: binding parameters, running a
//! statement, and reading its rows with the backend's own decoder.

use sqlx::query::Query;
use sqlx::{Column, Database, Encode, Executor, IntoArguments, Row, Type};

use super::{DbError, RowSet, Value};

/// The arguments of a statement on database `DB`.
type Arguments<'q, DB> = <DB as Database>::Arguments<'q>;

/// How a backend speaks to sqlx: its driver, how it binds parameters,
/// decodes a row and sorts errors.
pub trait Dialect {
    type Db: Database;
    /// `sql` with `params` bound, in order (each backend calls [`bind`] with
    /// the type its driver sends NULL as).
    fn bind(sql: &str, params: Vec<Value>) -> Query<'_, Self::Db, Arguments<'_, Self::Db>>;
    fn decode_row(row: &<Self::Db as Database>::Row) -> Result<Vec<Value>, DbError>;
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;
    fn error(err: sqlx::Error) -> DbError;
}

/// Bind `params` in order; `Value::Null` binds as a `Null` that is `None`.
pub fn bind<'q, DB: Database, Null>(sql: &'q str, params: Vec<Value>) -> Query<'q, DB, Arguments<'q, DB>>
where
    Null: 'q,
    Option<Null>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    Vec<u8>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    let mut q = sqlx::query::<DB>(sql);
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

/// Run a statement that returns rows on `executor`.
pub async fn query<'c, D: Dialect, E>(executor: E, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError>
where
    E: Executor<'c, Database = D::Db>,
    for<'q> Arguments<'q, D::Db>: IntoArguments<'q, D::Db>,
{
    let rows = D::bind(sql, params).fetch_all(executor).await.map_err(D::error)?;
    let columns = match rows.first() {
        Some(row) => row.columns().iter().map(|c| c.name().to_string()).collect(),
        None => Vec::new(),
    };
    let rows = rows.iter().map(D::decode_row).collect::<Result<_, _>>()?;
    Ok(RowSet { columns, rows })
}

/// Run a statement for its effect on `executor`: the rows it affected.
pub async fn execute<'c, D: Dialect, E>(executor: E, sql: &str, params: Vec<Value>) -> Result<u64, DbError>
where
    E: Executor<'c, Database = D::Db>,
    for<'q> Arguments<'q, D::Db>: IntoArguments<'q, D::Db>,
{
    let done = D::bind(sql, params).execute(executor).await.map_err(D::error)?;
    Ok(D::rows_affected(&done))
}
