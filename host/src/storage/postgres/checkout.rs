//! A connection of the component role's pool, checked out for one
//! statement or one transaction of a component's, and stopped at its
//! request's deadline.
//!
//! A statement still running when its caller goes away (the request's
//! deadline passed, or its client left) would keep its connection, and its
//! locks, until the statement ends: sqlx gives a connection back only once
//! the server has finished with it, so a `pg_sleep` outlived its 504 and
//! pinned the pool. Instead such a connection is closed at once, never
//! given back, and the server, checking every
//! `client_connection_check_interval` that its client is still there, stops
//! the statement and ends the backend. A transaction dropped between its
//! statements is rolled back before the connection goes back.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::time::Instant;

use super::Postgres as Backend;
use crate::storage::DbError;

pub(super) struct Checkout {
    /// `None` only once dropped.
    conn: Option<PoolConnection<Postgres>>,
    /// A statement was sent and has not answered.
    running: bool,
    /// A transaction is open.
    in_transaction: bool,
}

impl Checkout {
    /// A connection, waited for until `until`.
    pub(super) async fn acquire(pool: &PgPool, until: Instant) -> Result<Checkout, DbError> {
        let conn = tokio::time::timeout_at(until, pool.acquire())
            .await
            .map_err(|_| DbError::Unavailable("timed out waiting for a database connection".into()))?
            .map_err(Backend::classify)?;
        Ok(Checkout { conn: Some(conn), running: false, in_transaction: false })
    }

    /// Run one statement with `statement`, stopping it at `deadline`.
    pub(super) async fn run<T>(
        &mut self,
        deadline: Instant,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let conn = self.conn.as_deref_mut().ok_or_else(|| DbError::Other("a checked-in connection".into()))?;
        self.running = true;
        let answer = tokio::time::timeout_at(deadline, statement(conn))
            .await
            .map_err(|_| DbError::Busy("the request's deadline passed while the statement ran".into()))?;
        // A refused answer may have been cut off mid-way (a result over the
        // limit): the rest of it is not read, the connection is closed.
        self.running = matches!(answer, Err(DbError::Forbidden(_)));
        answer
    }

    pub(super) async fn begin(&mut self, deadline: Instant) -> Result<(), DbError> {
        self.run(deadline, async |conn| execute(conn, "BEGIN").await).await?;
        self.in_transaction = true;
        Ok(())
    }

    pub(super) async fn commit(&mut self, deadline: Instant) -> Result<(), DbError> {
        self.run(deadline, async |conn| execute(conn, "COMMIT").await).await?;
        self.in_transaction = false;
        Ok(())
    }

    /// Give the connection back (dropping does the same; this says so).
    pub(super) fn release(self) {}
}

async fn execute(conn: &mut PgConnection, sql: &'static str) -> Result<(), DbError> {
    sqlx::raw_sql(sql).execute(conn).await.map(drop).map_err(Backend::classify)
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.running {
            // Out of the pool and closed: the server sees its client gone.
            drop(conn.detach());
        } else if self.in_transaction {
            tokio::spawn(async move {
                let mut conn = conn;
                if execute(&mut conn, "ROLLBACK").await.is_err() {
                    drop(conn.detach());
                }
            });
        }
    }
}
