//! The PostgreSQL backend. It connects lazily: the host starts (and stays
//! live) while the database is not up yet, migrates in the background as
//! soon as it is reachable, and answers `unavailable` until then. Migrations
//! hold PostgreSQL's advisory lock, so replicas starting together cannot race.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult, PgRow, PgTypeInfo};
use sqlx::{PgPool, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use super::backend::{Backend, BackendTransaction};
use super::sql::{self, Dialect};
use super::{ConnectOptions, DbError, ErrorClass, RowSet, Value, classify};
use sqlx::query::Query;

/// Longest wait between two attempts to reach a database that is down.
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    /// Set once migrations have run: until then the schema may be missing.
    migrated: Arc<AtomicBool>,
}

struct Transaction(sqlx::Transaction<'static, sqlx::Postgres>);

impl Postgres {
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

    async fn transaction(&self) -> Result<Transaction, DbError> {
        self.ready()?;
        Ok(Transaction(self.pool.begin().await.map_err(Self::classify)?))
    }
}

#[async_trait]
impl Backend for Postgres {
    /// Returns at once; connecting and migrating go on in the background.
    async fn open(url: &str, options: &ConnectOptions) -> Result<Postgres, DbError> {
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

    fn classify(err: sqlx::Error) -> DbError {
        classify(err, class_of)
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        self.ready()?;
        let mut conn = self.pool.acquire().await.map_err(Self::classify)?;
        sql::query::<Self, _>(&mut *conn, sql, params).await
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.ready()?;
        let mut conn = self.pool.acquire().await.map_err(Self::classify)?;
        sql::execute::<Self, _>(&mut *conn, sql, params).await
    }

    async fn begin(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        Ok(Box::new(self.transaction().await?))
    }

    async fn begin_snapshot(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        let mut tx = self.transaction().await?;
        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", Vec::new()).await?;
        Ok(Box::new(tx))
    }

    fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// LISTEN on a connection of its own, reconnecting while the database is
    /// away; every (re)connection also wakes the subscriber, since a
    /// notification may have been missed meanwhile.
    fn subscribe(&self, channel: &'static str) -> Option<mpsc::Receiver<()>> {
        let (wake, woken) = mpsc::channel(1);
        let db = self.clone();
        tokio::spawn(async move {
            while !wake.is_closed() {
                if db.ready().is_ok()
                    && let Ok(mut listener) = PgListener::connect_with(&db.pool).await
                    && listener.listen(channel).await.is_ok()
                {
                    let _ = wake.try_send(());
                    while listener.try_recv().await.is_ok_and(|n| n.is_some()) {
                        let _ = wake.try_send(());
                    }
                    tracing::warn!(channel, "lost the database's notifications; listening again");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Some(woken)
    }
}

#[async_trait]
impl BackendTransaction for Transaction {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        sql::query::<Postgres, _>(&mut *self.0, sql, params).await
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        sql::execute::<Postgres, _>(&mut *self.0, sql, params).await
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        self.0.commit().await.map_err(Postgres::classify)
    }

    async fn notify(&mut self, channel: &str) -> Result<(), DbError> {
        self.execute("SELECT pg_notify($1, '')", vec![Value::Text(channel.into())]).await.map(drop)
    }

    /// Identity sequences do not follow explicitly inserted ids by themselves.
    async fn after_restore(&mut self) -> Result<(), DbError> {
        for table in ["pets", "orders"] {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
            );
            self.query(&sql, Vec::new()).await?;
        }
        Ok(())
    }
}

/// A NULL parameter sent without a type (OID 0, "unspecified"), so that
/// PostgreSQL infers it from where it stands: NULL fits a column of any
/// type (a NULL sent as text is refused by a `bytea` or `bigint` column).
struct UntypedNull;

impl sqlx::Type<sqlx::Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;

    fn bind(
        sql: &str,
        params: Vec<Value>,
    ) -> Query<'_, sqlx::Postgres, <sqlx::Postgres as sqlx::Database>::Arguments<'_>> {
        sql::bind::<sqlx::Postgres, UntypedNull>(sql, params)
    }

    /// Decode by each column's type: every integer width becomes a 64-bit
    /// integer, as SQLite answers.
    fn decode_row(row: &PgRow) -> Result<Vec<Value>, DbError> {
        (0..row.len()).map(|i| decode(row, i)).collect()
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn error(err: sqlx::Error) -> DbError {
        Self::classify(err)
    }
}

fn decode(row: &PgRow, i: usize) -> Result<Value, DbError> {
    let raw = row.try_get_raw(i).map_err(Postgres::classify)?;
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
    value.map_err(Postgres::classify)
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
