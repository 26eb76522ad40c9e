//! The `database` interface: thin conversions between WIT values and the
//! storage layer, the per-request cap on open transactions, and the record
//! of what a request made durable (which decides whether the runtime may run
//! it again after it lost to contention).

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;
use tracing::field::Empty;
use wasmtime::component::Resource;

use super::RequestState;
use super::bindings::petstore::api::database::{Error, Host, HostTransaction, RowSet, SqlDialect, Value};
use crate::storage::{self, DbError, Transaction};
use crate::telemetry::{Metrics, traces};

/// Open transactions one request may hold; each pins a pooled connection.
pub const MAX_OPEN_TRANSACTIONS: usize = 2;

/// Run a database call: its duration recorded under `operation`, in a
/// trace span named by the statement's operation and table (never values).
async fn timed<T>(metrics: &Metrics, operation: &str, sql: Option<&str>, call: impl Future<Output = T>) -> T {
    let span = tracing::info_span!(
        target: traces::TARGET,
        "statement",
        otel.name = Empty,
        otel.kind = "client",
        db.operation.name = Empty,
        db.collection.name = Empty,
        petstore.call = operation,
    );
    if !span.is_disabled() {
        let (statement, table) = sql.map_or_else(|| (operation.to_ascii_uppercase(), None), storage::statement_summary);
        span.record("otel.name", table.as_ref().map_or_else(|| statement.clone(), |t| format!("{statement} {t}")));
        span.record("db.operation.name", statement);
        span.record("db.collection.name", table);
    }
    let started = Instant::now();
    let result = call.instrument(span).await;
    metrics.db_duration.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
    result
}

impl RequestState {
    /// `result`, with a refusal logged under the component's name and
    /// counted: a component that reaches outside its grant is a bug, or an
    /// attack, that operators must see.
    fn checked<T>(&self, result: Result<T, DbError>) -> Result<T, Error> {
        if let Err(DbError::Forbidden(reason)) = &result {
            let component = &*self.component;
            let request_id = &*self.request_id;
            tracing::warn!(component, request_id, reason, "a component's statement was refused");
            self.shared.metrics.db_refused.with_label_values(&[component]).inc();
        }
        result.map_err(Error::from)
    }
}

impl Host for RequestState {
    async fn dialect(&mut self) -> SqlDialect {
        match self.shared.database.syntax() {
            storage::Syntax::Sqlite => SqlDialect::Sqlite,
            storage::Syntax::Postgres => SqlDialect::Postgresql,
        }
    }

    async fn query(&mut self, sql: String, params: Vec<Value>) -> Result<RowSet, Error> {
        let (shared, caller) = (self.shared.clone(), self.caller());
        let rows =
            timed(&shared.metrics, "query", Some(&sql), shared.database.query_as(&caller, &sql, to_storage(params)))
                .await;
        // Outside a transaction a statement commits by itself: unless it is a
        // plain SELECT, assume it wrote.
        self.outcome.record(&rows, !storage::is_select(&sql));
        self.checked(rows).map(to_wit)
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64, Error> {
        let (shared, caller) = (self.shared.clone(), self.caller());
        let affected = timed(
            &shared.metrics,
            "execute",
            Some(&sql),
            shared.database.execute_as(&caller, &sql, to_storage(params)),
        )
        .await;
        self.outcome.record(&affected, true);
        self.checked(affected)
    }
}

impl HostTransaction for RequestState {
    async fn begin(&mut self) -> Result<Resource<Transaction>, Error> {
        if self.open_transactions >= MAX_OPEN_TRANSACTIONS {
            return Err(Error::Other(format!("at most {MAX_OPEN_TRANSACTIONS} transactions may be open at once")));
        }
        let (shared, caller) = (self.shared.clone(), self.caller());
        let tx = timed(&shared.metrics, "begin", None, shared.database.begin_as(caller)).await;
        self.outcome.record(&tx, false);
        let tx = self.checked(tx)?;
        let handle = self.table.push(tx).map_err(|e| Error::Other(e.to_string()))?;
        self.open_transactions += 1;
        Ok(handle)
    }

    async fn query(&mut self, tx: Resource<Transaction>, sql: String, params: Vec<Value>) -> Result<RowSet, Error> {
        let shared = self.shared.clone();
        let tx = self.table.get_mut(&tx).map_err(|e| Error::Other(e.to_string()))?;
        let rows = timed(&shared.metrics, "query", Some(&sql), tx.query(&sql, to_storage(params))).await;
        self.outcome.record(&rows, false);
        self.checked(rows).map(to_wit)
    }

    async fn execute(&mut self, tx: Resource<Transaction>, sql: String, params: Vec<Value>) -> Result<u64, Error> {
        let shared = self.shared.clone();
        let tx = self.table.get_mut(&tx).map_err(|e| Error::Other(e.to_string()))?;
        let affected = timed(&shared.metrics, "execute", Some(&sql), tx.execute(&sql, to_storage(params))).await;
        self.outcome.record(&affected, false);
        self.checked(affected)
    }

    async fn commit(&mut self, tx: Resource<Transaction>) -> Result<(), Error> {
        let tx = self.table.delete(tx).map_err(|e| Error::Other(e.to_string()))?;
        self.open_transactions -= 1;
        let committed = timed(&self.shared.clone().metrics, "commit", None, tx.commit()).await;
        self.outcome.record(&committed, true);
        self.checked(committed)
    }

    /// Dropping an uncommitted transaction rolls it back (the backend does
    /// so when the transaction value is dropped).
    async fn drop(&mut self, tx: Resource<Transaction>) -> wasmtime::Result<()> {
        self.table.delete(tx)?;
        self.open_transactions -= 1;
        Ok(())
    }
}

impl From<DbError> for Error {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Constraint(m) => Error::ConstraintViolation(m),
            DbError::InvalidData(m) => Error::InvalidData(m),
            DbError::Contention(m) | DbError::Busy(m) => Error::Busy(m),
            DbError::Unavailable(m) => Error::Unavailable(m),
            DbError::Forbidden(m) => Error::Forbidden(m),
            DbError::Other(m) => Error::Other(m),
        }
    }
}

fn to_storage(params: Vec<Value>) -> Vec<storage::Value> {
    params
        .into_iter()
        .map(|v| match v {
            Value::Null => storage::Value::Null,
            Value::Integer(n) => storage::Value::Integer(n),
            Value::Real(f) => storage::Value::Real(f),
            Value::Text(s) => storage::Value::Text(s),
            Value::Blob(b) => storage::Value::Blob(b),
            Value::Boolean(b) => storage::Value::Boolean(b),
        })
        .collect()
}

fn to_wit(rows: storage::RowSet) -> RowSet {
    let convert = |v| match v {
        storage::Value::Null => Value::Null,
        storage::Value::Integer(n) => Value::Integer(n),
        storage::Value::Real(f) => Value::Real(f),
        storage::Value::Text(s) => Value::Text(s),
        storage::Value::Blob(b) => Value::Blob(b),
        storage::Value::Boolean(b) => Value::Boolean(b),
    };
    RowSet {
        columns: rows.columns,
        rows: rows.rows.into_iter().map(|r| r.into_iter().map(convert).collect()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::host_api::{HandlerSettings, Shared};
    use crate::storage::mock::{Answer, Mock};
    use crate::storage::{Database, Grant};

    fn request(mock: &Mock) -> RequestState {
        let shared = Shared {
            database: Database::from_backend(mock.clone()),
            grants: [("pets".to_string(), Arc::new(Grant::new("pets", ["pets", "pet_tags"])))].into(),
            settings: HandlerSettings { api_version: "1".into(), pagination_limit: 20, pagination_max: 100 },
            metrics: Arc::new(Metrics::new().expect("metrics")),
        };
        RequestState::new(Arc::new(shared), Arc::from("req-1"), Arc::from("pets"), tokio::time::Instant::now())
    }

    fn fails(err: DbError) -> Answer {
        Answer::Fails(err)
    }

    #[tokio::test]
    async fn each_class_of_database_error_reaches_the_guest_as_its_own_case() {
        let mock = Mock::default();
        for err in [
            DbError::Constraint("c".into()),
            DbError::InvalidData("d".into()),
            DbError::Contention("40001".into()),
            DbError::Busy("b".into()),
            DbError::Unavailable("u".into()),
            DbError::Forbidden("f".into()),
            DbError::Other("o".into()),
        ] {
            mock.then(fails(err));
        }
        let mut req = request(&mock);
        let mut answers = Vec::new();
        for _ in 0..7 {
            answers.push(Host::execute(&mut req, "UPDATE pets SET name = 'x'".into(), Vec::new()).await);
        }
        assert!(matches!(
            answers.as_slice(),
            [
                Err(Error::ConstraintViolation(_)),
                Err(Error::InvalidData(_)),
                Err(Error::Busy(_)),
                Err(Error::Busy(_)),
                Err(Error::Unavailable(_)),
                Err(Error::Forbidden(_)),
                Err(Error::Other(_)),
            ]
        ));
        assert!(mock.callers().iter().all(|c| c.as_deref() == Some("pets")), "every statement ran as the component");
        assert_eq!(req.shared.metrics.db_refused.with_label_values(&["pets"]).get(), 1, "the refusal is counted");
    }

    #[tokio::test]
    async fn a_request_that_lost_to_contention_may_run_again_only_if_nothing_was_committed() {
        let mock = Mock::default();
        mock.then(Answer::Rows(Default::default())).then(fails(DbError::Contention("40P01".into())));
        let mut req = request(&mock);
        let tx = HostTransaction::begin(&mut req).await.expect("begin");
        Host::query(&mut req, "SELECT 1".into(), Vec::new()).await.expect("a read");
        assert!(HostTransaction::execute(&mut req, tx, "UPDATE pets".into(), Vec::new()).await.is_err());
        assert!(req.may_run_again(), "only a read and the lost transaction: safe to run again");

        let mock = Mock::default();
        mock.then(Answer::Affected(1)).then(fails(DbError::Contention("40001".into())));
        let mut req = request(&mock);
        Host::execute(&mut req, "INSERT INTO pet_tags VALUES (1, 'a')".into(), Vec::new()).await.expect("a write");
        let tx = HostTransaction::begin(&mut req).await.expect("begin");
        assert!(HostTransaction::execute(&mut req, tx, "UPDATE pets".into(), Vec::new()).await.is_err());
        assert!(!req.may_run_again(), "a write outside a transaction committed by itself");
        assert_eq!(mock.calls(), ["execute INSERT INTO pet_tags VALUES (1, 'a')", "begin", "execute UPDATE pets"]);
    }

    #[tokio::test]
    async fn a_request_holds_at_most_two_transactions() {
        let mock = Mock::default();
        let mut req = request(&mock);
        let first = HostTransaction::begin(&mut req).await.expect("first");
        let _second = HostTransaction::begin(&mut req).await.expect("second");
        assert!(matches!(HostTransaction::begin(&mut req).await, Err(Error::Other(_))));
        HostTransaction::commit(&mut req, first).await.expect("commit");
        assert!(HostTransaction::begin(&mut req).await.is_ok(), "a slot is free again after a commit");
        assert!(!req.is_between_requests(), "transactions are still open");
    }
}
