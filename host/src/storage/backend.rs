//! What a database backend provides: the one trait each backend implements
//! (SQLite and PostgreSQL in their own folders, a mock for tests), so the
//! code above it is written once for all of them. Every statement names its
//! [`Caller`]: a backend runs a component's only within its grant and stops
//! it at its deadline.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::statement::Syntax;
use super::{Caller, DbError, RowSet, Value};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The SQL it speaks.
    fn syntax(&self) -> Syntax;

    /// A statement that returns rows, outside any transaction.
    async fn query(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError>;

    /// A statement run for its effect, outside any transaction.
    async fn execute(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<u64, DbError>;

    /// A write transaction whose statements run for `caller`.
    async fn begin(&self, caller: &Caller) -> Result<Box<dyn BackendTransaction>, DbError>;

    /// A read-only transaction that sees one snapshot for all its reads (the host's).
    async fn begin_snapshot(&self) -> Result<Box<dyn BackendTransaction>, DbError>;

    /// A cheap round trip on every kind of connection, for readiness.
    async fn ping(&self) -> Result<(), DbError> {
        self.query(&Caller::Host, "SELECT 1", Vec::new()).await.map(drop)
    }

    /// Connections open for components' statements, and how many are idle.
    fn pool_stats(&self) -> (u32, usize);

    /// A wake-up each time `channel` is notified by another connection
    /// ([`BackendTransaction::notify`]), and one after every (re)connection,
    /// when a notification may have been missed. `None` where the backend
    /// has no notifications (one process owns an SQLite file).
    fn subscribe(&self, _channel: &'static str) -> Option<mpsc::Receiver<()>> {
        None
    }
}

/// An open transaction; dropping it rolls back.
#[async_trait]
pub trait BackendTransaction: Send {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError>;

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError>;

    async fn commit(self: Box<Self>) -> Result<(), DbError>;

    /// Before a restore writes many rows: what the backend does per row
    /// that a restore does better once, at its end, it may skip.
    async fn before_restore(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    /// After rows were inserted with explicit ids (a restore), make the next
    /// generated id follow the largest one (and catch up on what
    /// `before_restore` skipped).
    async fn after_restore(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    /// Wake up the subscribers of `channel` once this transaction commits
    /// (nothing where the backend has no notifications).
    async fn notify(&mut self, _channel: &str) -> Result<(), DbError> {
        Ok(())
    }
}
