//! A scripted backend for tests of the layers above storage: each statement
//! (outside or inside a transaction) takes the next answer from a script,
//! and every call is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::backend::{Backend, BackendTransaction};
use super::statement::Syntax;
use super::{Caller, DbError, RowSet, Value};

/// What a scripted statement answers.
pub enum Answer {
    Rows(RowSet),
    Affected(u64),
    Fails(DbError),
}

/// The script and the record of calls, shared by the backend and its
/// transactions.
#[derive(Clone, Default)]
pub struct Mock {
    script: Arc<Mutex<VecDeque<Answer>>>,
    calls: Arc<Mutex<Vec<String>>>,
    /// The component each statement outside a transaction, and each
    /// `begin`, ran for (`None`: the host).
    callers: Arc<Mutex<Vec<Option<String>>>>,
}

impl Mock {
    /// Answer the next statement with `answer`.
    pub fn then(&self, answer: Answer) -> &Mock {
        self.script.lock().unwrap_or_else(PoisonError::into_inner).push_back(answer);
        self
    }

    /// Every call so far: `query SQL`, `execute SQL`, `begin`, `commit`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// For whom each statement outside a transaction, and each `begin`, ran.
    pub fn callers(&self) -> Vec<Option<String>> {
        self.callers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record_caller(&self, caller: &Caller) {
        let who = caller.grant().map(|g| g.component().to_string());
        self.callers.lock().unwrap_or_else(PoisonError::into_inner).push(who);
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }

    fn next(&self, call: String) -> Result<Answer, DbError> {
        self.record(call);
        match self.script.lock().unwrap_or_else(PoisonError::into_inner).pop_front() {
            Some(Answer::Fails(err)) => Err(err),
            Some(answer) => Ok(answer),
            None => Ok(Answer::Affected(0)),
        }
    }

    fn rows(&self, sql: &str) -> Result<RowSet, DbError> {
        match self.next(format!("query {sql}"))? {
            Answer::Rows(rows) => Ok(rows),
            _ => Ok(RowSet::default()),
        }
    }

    fn affected(&self, sql: &str) -> Result<u64, DbError> {
        match self.next(format!("execute {sql}"))? {
            Answer::Affected(n) => Ok(n),
            _ => Ok(0),
        }
    }
}

#[async_trait]
impl Backend for Mock {
    fn syntax(&self) -> Syntax {
        Syntax::Sqlite
    }

    async fn query(&self, caller: &Caller, sql: &str, _params: Vec<Value>) -> Result<RowSet, DbError> {
        self.record_caller(caller);
        self.rows(sql)
    }

    async fn execute(&self, caller: &Caller, sql: &str, _params: Vec<Value>) -> Result<u64, DbError> {
        self.record_caller(caller);
        self.affected(sql)
    }

    async fn begin(&self, caller: &Caller) -> Result<Box<dyn BackendTransaction>, DbError> {
        self.record_caller(caller);
        self.record("begin".into());
        Ok(Box::new(self.clone()))
    }

    async fn begin_snapshot(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        self.begin(&Caller::Host).await
    }

    fn pool_stats(&self) -> (u32, usize) {
        (0, 0)
    }
}

#[async_trait]
impl BackendTransaction for Mock {
    async fn query(&mut self, sql: &str, _params: Vec<Value>) -> Result<RowSet, DbError> {
        self.rows(sql)
    }

    async fn execute(&mut self, sql: &str, _params: Vec<Value>) -> Result<u64, DbError> {
        self.affected(sql)
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        self.next("commit".into()).map(drop)
    }
}
