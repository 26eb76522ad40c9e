//! A component-role connection checked out (`pool.rs`) for one statement or
//! one transaction of a component's, and stopped at its request's deadline.
//!
//! A statement still running when its caller goes away (the request's
//! deadline passed, or its client left) would otherwise keep its
//! connection, and its locks, until the statement ends: a `pg_sleep` would
//! outlive its 504 and pin the pool. Instead such a connection is closed at
//! once, never given back, and the server, checking every
//! `client_connection_check_interval` that its client is still there, stops
//! the statement and ends the backend (and the host ends any that does not:
//! `Postgres::end_overdue_backends`). A transaction dropped between its
//! statements is rolled back before the connection goes back.

use std::sync::Arc;

use sqlx::PgConnection;
use tokio::time::Instant;

use super::Postgres;
use super::pool::{Conns, Lent};
use crate::storage::DbError;
use crate::storage::screen::Session;

pub(super) struct Checkout {
    /// `None` only once dropped.
    lent: Option<Lent>,
    /// A statement was sent and has not answered.
    running: bool,
    /// A transaction is open.
    in_transaction: bool,
    /// The server or the network failed under it.
    lost: bool,
    /// What its statements may have done to the session: it is reset
    /// before it is lent again if any may have changed it.
    session: Session,
}

impl Checkout {
    /// A connection, waited for until `until`.
    pub(super) async fn acquire(conns: &Arc<Conns>, until: Instant) -> Result<Checkout, DbError> {
        let lent = conns.acquire(until).await?;
        Ok(Checkout { lent: Some(lent), running: false, in_transaction: false, lost: false, session: Session::Kept })
    }

    /// A statement the screen judged `session` is about to run on it.
    pub(super) fn will_run(&mut self, session: Session) {
        if session == Session::MayChange {
            self.session = session;
        }
    }

    /// Run one statement with `statement`, stopping it at `deadline`.
    pub(super) async fn run<T>(
        &mut self,
        deadline: Instant,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let conn = self.lent.as_mut().ok_or_else(|| DbError::Other("a connection given back".into()))?.conn()?;
        self.running = true;
        let answer = tokio::time::timeout_at(deadline, statement(conn))
            .await
            .map_err(|_| DbError::Busy("the request's deadline passed while the statement ran".into()))?;
        // A refused answer may have been cut off mid-way (a result over the
        // limit): the rest of it is not read, the connection is closed.
        self.running = matches!(answer, Err(DbError::Forbidden(_)));
        self.lost = matches!(answer, Err(DbError::Unavailable(_)));
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
    sqlx::raw_sql(sql).execute(conn).await.map(drop).map_err(Postgres::classify)
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(mut lent) = self.lent.take() else { return };
        let session = self.session;
        if self.lost {
            lent.lost();
        } else if self.running {
            // Closed: the server sees its client gone.
            drop(lent);
        } else if self.in_transaction {
            tokio::spawn(async move {
                if let Ok(conn) = lent.conn()
                    && execute(conn, "ROLLBACK").await.is_ok()
                {
                    lent.give_back(session);
                }
            });
        } else {
            lent.give_back(session);
        }
    }
}
