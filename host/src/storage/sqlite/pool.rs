//! The SQLite backend's connections, each with its [`Sandbox`], lent to one
//! caller at a time: the readers as a fixed pool, the writer behind a queue
//! (see the backend's doc).
//!
//! A connection whose caller went away mid-statement (its request ran past
//! its deadline, or its client left) is lent again only after its worker
//! has finished that statement, which the sandbox stops at the abandoning
//! request's deadline: so a later caller's grant and deadline never apply
//! to an earlier caller's statement, and an abandoned transaction is rolled
//! back before anyone else writes.

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Sqlite;
use super::sandbox::{self, Purpose, Sandbox};
use crate::storage::screen::Screen;
use crate::storage::statement::Syntax;
use crate::storage::{Caller, DbError};

/// One connection and what its last caller left behind.
pub(super) struct Conn {
    conn: SqliteConnection,
    sandbox: Arc<Sandbox>,
    /// What the host refuses before SQLite sees a component's statement.
    screen: Arc<Screen>,
    /// A statement was sent and its caller never saw it finish.
    abandoned: bool,
    /// A transaction is open that nobody committed.
    in_transaction: bool,
}

impl Conn {
    pub(super) async fn new(
        mut conn: SqliteConnection,
        read_only: bool,
        purpose: Purpose,
        screen: Arc<Screen>,
    ) -> Result<Conn, DbError> {
        let sandbox = sandbox::install(&mut conn, read_only, purpose).await?;
        Ok(Conn { conn, sandbox, screen, abandoned: false, in_transaction: false })
    }

    /// Run `sql` for `caller` with `run`, the sandbox set for the caller.
    pub(super) async fn run<T>(
        &mut self,
        caller: &Caller,
        sql: &str,
        run: impl AsyncFnOnce(&mut SqliteConnection, String) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if let Some(grant) = caller.grant() {
            self.screen.check(grant, sql, Syntax::Sqlite)?;
        }
        self.sandbox.enter(caller);
        self.abandoned = true;
        let result = run(&mut self.conn, sandbox::statement_text(caller, sql)).await;
        self.abandoned = false;
        result.map_err(|err| self.sandbox.explain(err))
    }

    /// Run one of the host's own statements (BEGIN, COMMIT, …).
    pub(super) async fn host(&mut self, sql: &'static str) -> Result<(), DbError> {
        self.raw(sql).await
    }

    pub(super) async fn begin(&mut self, sql: &'static str) -> Result<(), DbError> {
        self.host(sql).await?;
        self.in_transaction = true;
        Ok(())
    }

    pub(super) async fn commit(&mut self) -> Result<(), DbError> {
        self.host("COMMIT").await?;
        self.in_transaction = false;
        Ok(())
    }

    /// Make the connection clean for a new holder: wait out a statement its
    /// last holder abandoned, roll back a transaction it left open.
    pub(super) async fn clean(&mut self) -> Result<(), DbError> {
        if self.abandoned {
            // Answered once the worker has finished every command before it.
            self.conn.ping().await.map_err(Sqlite::classify)?;
            self.abandoned = false;
        }
        if self.in_transaction {
            self.raw("ROLLBACK").await?;
            self.in_transaction = false;
        }
        Ok(())
    }

    async fn raw(&mut self, sql: &'static str) -> Result<(), DbError> {
        self.sandbox.enter(&Caller::Host);
        self.abandoned = true;
        let done = sqlx::raw_sql(sql).execute(&mut self.conn).await.map(drop).map_err(Sqlite::classify);
        self.abandoned = false;
        done
    }
}

/// The readers: a fixed set of connections lent one at a time.
pub(super) struct Readers {
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl Readers {
    pub(super) fn new(conns: Vec<Conn>) -> Readers {
        let size = conns.len();
        Readers { idle: Mutex::new(conns), permits: Arc::new(Semaphore::new(size)), size }
    }

    /// A reader, waited for in turn until `until`.
    pub(super) async fn acquire(self: &Arc<Self>, until: Instant) -> Result<Lease, DbError> {
        let permit = tokio::time::timeout_at(until, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| DbError::Unavailable("timed out waiting for a database connection".into()))?
            .map_err(|_| DbError::Unavailable("the database is closed".into()))?;
        let conn = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        // A permit is only ever held with a connection taken out.
        let conn = conn.ok_or_else(|| DbError::Other("no idle reader behind a free permit".into()))?;
        let mut lease = Lease { conn: Some(conn), readers: self.clone(), _permit: permit };
        lease.clean().await?;
        Ok(lease)
    }

    /// Connections, and how many of them are idle.
    pub(super) fn stats(&self) -> (usize, usize) {
        (self.size, self.permits.available_permits())
    }
}

/// A reader lent out; given back when dropped.
pub(super) struct Lease {
    conn: Option<Conn>,
    readers: Arc<Readers>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Back before the permit is released (fields drop after this body).
        if let Some(conn) = self.conn.take() {
            self.readers.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}
