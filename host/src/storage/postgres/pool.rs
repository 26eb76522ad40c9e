//! The component role's connections, lent one statement or transaction at a
//! time. sqlx's pool sends a round trip to test a connection each time it
//! is taken; this one sends none for a connection used a moment ago, and
//! one after a use that may have changed the session (the screen's
//! verdict): the session reset, every setting back to the session's start,
//! after the connection is given back and off the caller's path. A
//! connection idle for long is tested before it is lent; one that failed,
//! or was given up mid-statement, is closed, never lent again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Postgres;
use crate::storage::DbError;
use crate::storage::screen::Session;

/// Run on a connection given back after a statement that called a function
/// the screen does not know to keep the session (one round trip): every
/// setting back to the session's start. Such a statement could change one
/// only through a hole in the screen's list of refused functions
/// (`set_config`); whatever it did, the next one starts clean. A statement
/// that calls only the known functions cannot change a setting, and costs
/// no reset (about a seventh of a request's time on a small machine). (An
/// advisory lock, the other state a function could leave, ends its
/// backend: `Postgres::end_overdue_backends`. LISTEN and PREPARE are
/// statements, never functions: the screen's first word.)
const RESET_SESSION: &str = "RESET ALL";

/// A connection idle longer than this is tested before it is lent (the
/// server may have restarted, or closed it).
const STALE_AFTER: Duration = Duration::from_secs(10);

pub(super) struct Conns {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    /// Connections open, idle or lent.
    open: AtomicU32,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// A connection lent out. [`Lent::give_back`] returns it to the pool
/// (reset in the background first when asked); dropped otherwise, it is
/// closed.
pub(super) struct Lent {
    conn: Option<PgConnection>,
    conns: Arc<Conns>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Conns {
    pub(super) fn new(options: PgConnectOptions, size: u32) -> Arc<Conns> {
        Arc::new(Conns {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            open: AtomicU32::new(0),
        })
    }

    /// A connection, waited for (and made, when none is idle) until `until`.
    pub(super) async fn acquire(self: &Arc<Self>, until: Instant) -> Result<Lent, DbError> {
        let timed_out = || DbError::Unavailable("timed out waiting for a database connection".into());
        let permit = tokio::time::timeout_at(until, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| DbError::Unavailable("the database is closed".into()))?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let conn = match idle {
                Some(Idle { conn, since }) if since.elapsed() < STALE_AFTER => conn,
                Some(Idle { mut conn, .. }) => match tokio::time::timeout_at(until, conn.ping()).await {
                    Ok(Ok(())) => conn,
                    Ok(Err(_)) => {
                        self.closed();
                        continue;
                    }
                    Err(_) => {
                        self.closed();
                        return Err(timed_out());
                    }
                },
                None => {
                    let conn = tokio::time::timeout_at(until, PgConnection::connect_with(&self.options))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(Postgres::classify)?;
                    self.open.fetch_add(1, Ordering::Relaxed);
                    conn
                }
            };
            return Ok(Lent { conn: Some(conn), conns: self.clone(), permit: Some(permit) });
        }
    }

    /// Connections open, and how many of them are idle.
    pub(super) fn stats(&self) -> (u32, usize) {
        (self.open.load(Ordering::Relaxed), self.idle.lock().unwrap_or_else(PoisonError::into_inner).len())
    }

    /// The server went away: the idle connections are likely dead too.
    fn lost(&self) {
        let dead = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        self.open.fetch_sub(dead.len() as u32, Ordering::Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lent {
    pub(super) fn conn(&mut self) -> Result<&mut PgConnection, DbError> {
        self.conn.as_mut().ok_or_else(|| DbError::Other("a connection given back".into()))
    }

    /// Give the connection back: idle at once when its session was kept,
    /// else reset first (in the background; the connection is lent again
    /// only after its reset).
    pub(super) fn give_back(mut self, session: Session) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else { return };
        let conns = self.conns.clone();
        if session == Session::Kept {
            conns.idle.lock().unwrap_or_else(PoisonError::into_inner).push(Idle { conn, since: Instant::now() });
            drop(permit);
            return;
        }
        tokio::spawn(async move {
            match sqlx::raw_sql(RESET_SESSION).execute(&mut conn).await {
                Ok(_) => {
                    conns.idle.lock().unwrap_or_else(PoisonError::into_inner).push(Idle { conn, since: Instant::now() })
                }
                Err(_) => conns.closed(),
            }
            drop(permit);
        });
    }

    /// The statement failed because the server or the network did: close
    /// this connection and the idle ones.
    pub(super) fn lost(mut self) {
        if self.conn.take().is_some() {
            self.conns.closed();
        }
        self.conns.lost();
    }
}

impl Drop for Lent {
    /// Not given back: closed (its socket with it, so the server ends a
    /// statement still running on it).
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.conns.closed();
        }
    }
}
