//! The PostgreSQL backend. It connects lazily: the host starts (and stays
//! live) while the database is not up yet, migrates in the background as
//! soon as it is reachable, and answers `unavailable` until then. Migrations
//! hold PostgreSQL's advisory lock, so replicas starting together cannot race.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Column, PgConnection, PgPool, Row, TypeInfo, ValueRef};

use super::{ConnectOptions, DbError, ErrorClass, RowSet, Value, classify};

/// Longest wait between two attempts to reach a database that is down.
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    /// Set once migrations have run: until then the schema may be missing.
    migrated: Arc<AtomicBool>,
}

impl Postgres {
    pub fn open(url: &str, options: &ConnectOptions) -> Result<Postgres, DbError> {
        let mut connect =
            PgConnectOptions::from_str(url).map_err(|e| DbError::Other(format!("invalid PostgreSQL URL: {e}")))?;
        if let Some(user) = &options.user {
            connect = connect.username(user);
        }
        if let Some(password) = &options.password {
            connect = connect.password(password);
        }
        let statement_timeout = options.statement_timeout.as_millis().to_string();
        connect = connect.application_name("petstore").options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        let db = Postgres { pool, migrated: Arc::new(AtomicBool::new(false)) };
        tokio::spawn(db.clone().migrate_when_reachable());
        Ok(db)
    }

    async fn migrate_when_reachable(self) {
        let mut wait = Duration::from_millis(100);
        loop {
            match sqlx::migrate!("./migrations/postgres").run(&self.pool).await {
                Ok(()) => {
                    self.migrated.store(true, Ordering::Release);
                    tracing::info!("database schema is up to date");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_ms = wait.as_millis() as u64, "database not ready; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn ready(&self) -> Result<(), DbError> {
        if self.migrated.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(DbError::Unavailable("the database has not been reached yet".into()))
        }
    }

    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        self.ready()?;
        let mut conn = self.pool.acquire().await.map_err(error)?;
        query(&mut conn, sql, params).await
    }

    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.ready()?;
        let mut conn = self.pool.acquire().await.map_err(error)?;
        execute(&mut conn, sql, params).await
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DbError> {
        self.ready()?;
        self.pool.begin().await.map_err(error)
    }
}

fn bind(sql: &str, params: Vec<Value>) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<String>),
            Value::Integer(n) => q.bind(n),
            Value::Real(f) => q.bind(f),
            Value::Text(s) => q.bind(s),
            Value::Blob(b) => q.bind(b),
            Value::Boolean(b) => q.bind(b),
        };
    }
    q
}

pub async fn query(conn: &mut PgConnection, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
    let rows = bind(sql, params).fetch_all(conn).await.map_err(error)?;
    let columns = match rows.first() {
        Some(row) => row.columns().iter().map(|c| c.name().to_string()).collect(),
        None => Vec::new(),
    };
    let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
    Ok(RowSet { columns, rows })
}

pub async fn execute(conn: &mut PgConnection, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
    Ok(bind(sql, params).execute(conn).await.map_err(error)?.rows_affected())
}

/// Decode by each column's type: every integer width becomes a 64-bit
/// integer, as SQLite answers.
fn decode_row(row: &PgRow) -> Result<Vec<Value>, DbError> {
    (0..row.len()).map(|i| decode(row, i)).collect()
}

fn decode(row: &PgRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(error)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let type_name = raw.type_info().name().to_string();
    let value = match type_name.as_str() {
        "INT8" => row.try_get(i).map(Value::Integer),
        "INT4" => row.try_get::<i32, _>(i).map(|n| Value::Integer(n.into())),
        "INT2" => row.try_get::<i16, _>(i).map(|n| Value::Integer(n.into())),
        "FLOAT8" => row.try_get(i).map(Value::Real),
        "FLOAT4" => row.try_get::<f32, _>(i).map(|f| Value::Real(f.into())),
        "BOOL" => row.try_get(i).map(Value::Boolean),
        "BYTEA" => row.try_get(i).map(Value::Blob),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => row.try_get(i).map(Value::Text),
        other => {
            return Err(DbError::Other(format!(
                "column {i} has a type the database interface does not carry: {other}"
            )));
        }
    };
    value.map_err(error)
}

/// Sort a PostgreSQL error (see [`class_of`]).
pub fn error(err: sqlx::Error) -> DbError {
    classify(err, class_of)
}

/// PostgreSQL's SQLSTATE codes by class (Appendix A of its manual).
fn class_of(code: &str) -> ErrorClass {
    match code {
        // Serialization failure, deadlock: the transaction was rolled back
        // and may simply be run again.
        "40001" | "40P01" => ErrorClass::Contention,
        // A deferred constraint checked at commit.
        "40002" => ErrorClass::Constraint,
        // Lock not available, object in use, statement timeout.
        "55P03" | "55006" | "57014" => ErrorClass::Busy,
        _ => match code.get(..2) {
            Some("23") => ErrorClass::Constraint,
            // Data exception (22: NUL in text, out of range, bad cast…) and
            // program limit exceeded (54: a value too large to index).
            Some("22" | "54") => ErrorClass::InvalidData,
            // Connection exception, insufficient resources (disk, memory,
            // connections), operator intervention (shutdown, crash
            // recovery), system error.
            Some("08" | "53" | "57" | "58") => ErrorClass::Unavailable,
            _ => ErrorClass::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sort_by_whose_fault_they_are() {
        for (code, class) in [
            ("23505", ErrorClass::Constraint),
            ("23514", ErrorClass::Constraint),
            ("22021", ErrorClass::InvalidData),
            ("22003", ErrorClass::InvalidData),
            ("22P02", ErrorClass::InvalidData),
            ("54000", ErrorClass::InvalidData),
            ("40001", ErrorClass::Contention),
            ("40P01", ErrorClass::Contention),
            ("57014", ErrorClass::Busy),
            ("55P03", ErrorClass::Busy),
            ("08006", ErrorClass::Unavailable),
            ("53300", ErrorClass::Unavailable),
            ("57P01", ErrorClass::Unavailable),
            ("42P01", ErrorClass::Other),
            ("25P02", ErrorClass::Other),
        ] {
            assert_eq!(class_of(code), class, "{code}");
        }
    }
}
