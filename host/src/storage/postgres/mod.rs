//! The PostgreSQL backend. It connects lazily: the host starts (and stays
//! live) while the database is not up yet, migrates in the background as
//! soon as it is reachable, sets up what components may reach, and answers
//! `unavailable` until then. Migrations hold PostgreSQL's advisory lock, so
//! replicas starting together cannot race.
//!
//! Two pools, two roles. The host's own statements (migrations, the
//! registry, backups) run as the service's role, which owns the schema.
//! Components' statements run as a login role of their own
//! (`DB_COMPONENT_USER`, see `roles.rs`): DML on the tables the grants name
//! and nothing else, screened first (`storage/screen.rs`), on connections
//! of their own that are reset after every use (`pool.rs`), and stopped at
//! their request's deadline (`checkout.rs`).

mod checkout;
mod pool;
mod roles;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult, PgRow, PgTypeInfo};
use sqlx::query::Query;
use sqlx::{PgPool, Row, TypeInfo, ValueRef};
use tokio::sync::mpsc;

use self::checkout::Checkout;
use self::pool::Conns;
use super::backend::{Backend, BackendTransaction};
use super::screen::Screen;
use super::sql::{self, Dialect};
use super::statement::Syntax;
use super::{COMPONENT_RESULT_LIMIT, Caller, ConnectOptions, DbError, ErrorClass, RowSet, Value, classify, until};

/// Longest wait between two attempts to reach a database that is down.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The host's pool when components have their own: the registry's sync,
/// an upload, a health check.
const HOST_POOL_SIZE: u32 = 4;

/// How often a backend running a component's statement checks that its
/// client is still there: a statement whose request passed its deadline
/// has its connection closed, and its backend stops within this.
const CLIENT_CHECK_MS: u32 = 200;

/// How often the host looks for a component backend that outlived every
/// limit (see [`Postgres::end_overdue_backends`]).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Postgres {
    /// The service's own role.
    host: PgPool,
    /// The components' role; `None` where no component runs (the backup
    /// commands).
    components: Option<Components>,
    /// Set once migrations have run and the component role is set up.
    ready: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Components {
    conns: Arc<Conns>,
    role: String,
    screen: Arc<Screen>,
    /// The union of the grants' tables: what the role may use.
    tables: Vec<String>,
    acquire_timeout: Duration,
}

/// A host transaction (sqlx's), or a component's (see `checkout.rs`).
enum Transaction {
    Host(sqlx::Transaction<'static, sqlx::Postgres>),
    Component { conn: Checkout, caller: Caller, screen: Arc<Screen> },
}

impl Postgres {
    /// Returns at once; connecting, migrating and setting up the component
    /// role go on in the background.
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Postgres, DbError> {
        let mut connect =
            PgConnectOptions::from_str(url).map_err(|e| DbError::Other(format!("invalid PostgreSQL URL: {e}")))?;
        if let Some(user) = &options.user {
            connect = connect.username(user);
        }
        if let Some(password) = &options.password {
            connect = connect.password(password);
        }
        let statement_timeout = options.statement_timeout.as_millis().to_string();
        let host = connect
            .clone()
            .application_name("petstore")
            // The registry's tables are in a schema of their own.
            .options([("statement_timeout", statement_timeout.as_str()), ("search_path", "public, petstore_registry")]);
        let components = match &options.components {
            None => None,
            Some(access) => {
                let role = access.user.clone().ok_or_else(|| {
                    DbError::Other("components need a database role of their own: set DB_COMPONENT_USER".into())
                })?;
                let mut as_components = connect.clone().username(&role).application_name("petstore-components");
                if let Some(password) = &access.password {
                    as_components = as_components.password(password);
                }
                let check = CLIENT_CHECK_MS.to_string();
                let as_components = as_components.options([
                    ("statement_timeout", statement_timeout.as_str()),
                    ("search_path", "public"),
                    // The screen reads strings as PostgreSQL does with this on.
                    ("standard_conforming_strings", "on"),
                    ("client_connection_check_interval", check.as_str()),
                    ("idle_in_transaction_session_timeout", statement_timeout.as_str()),
                ]);
                let conns = Conns::new(as_components, options.max_connections);
                let mut tables: Vec<String> =
                    access.grants.iter().flat_map(|g| g.tables().map(str::to_string)).collect();
                tables.sort();
                tables.dedup();
                Some(Components {
                    conns,
                    role,
                    screen: Arc::new(Screen::new(&access.grants)),
                    tables,
                    acquire_timeout: options.acquire_timeout,
                })
            }
        };
        let host_size = if components.is_some() { HOST_POOL_SIZE } else { options.max_connections };
        let host = PgPoolOptions::new()
            .max_connections(host_size)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(host);
        let db = Postgres { host, components, ready: Arc::new(AtomicBool::new(false)) };
        tokio::spawn(db.clone().set_up_when_reachable(options.statement_timeout));
        Ok(db)
    }

    /// Migrate, then give the component role what the grants name (and
    /// check it has nothing more), retrying until the database lets it;
    /// then keep ending overdue component backends.
    async fn set_up_when_reachable(self, statement_timeout: Duration) {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.set_up().await {
                Ok(()) => {
                    self.ready.store(true, Ordering::Release);
                    tracing::info!("database schema is up to date");
                    if let Some(components) = &self.components {
                        let role = components.role.clone();
                        tokio::spawn(self.clone().end_overdue_backends(role, statement_timeout));
                    }
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

    async fn set_up(&self) -> Result<(), DbError> {
        // The host's search_path puts `public` first, so migrations (and
        // sqlx's bookkeeping table) stay where they have always been.
        sqlx::migrate!("./migrations/postgres")
            .run(&self.host)
            .await
            .map_err(|e| DbError::Unavailable(format!("migration failed: {e}")))?;
        if let Some(components) = &self.components {
            let mut conn = self.host.acquire().await.map_err(Self::classify)?;
            roles::set_up(&mut conn, &components.role, &components.tables).await?;
        }
        Ok(())
    }

    /// Every [`SWEEP_EVERY`], end the component role's backends that have
    /// been busy (a statement, or a transaction left open) for longer than
    /// any statement may run, or that hold an advisory lock. The statement
    /// timeout, the idle-transaction timeout and the closed connection
    /// should each have ended the first kind, and the screen refuses the
    /// functions that take the second (which could block the host's own
    /// locks: migrations, grants): one still there has found a way around
    /// them. The host's role is a member of the component role (the DBA's
    /// script), which lets it.
    async fn end_overdue_backends(self, role: String, statement_timeout: Duration) {
        let overdue = (statement_timeout + Duration::from_secs(1)).as_secs_f64();
        let mut failing = false;
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let ended = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity a \
                 WHERE usename = $1 AND ((state <> 'idle' AND state_change < now() - make_interval(secs => $2)) \
                 OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory'))",
            )
            .bind(&role)
            .bind(overdue)
            .fetch_one(&self.host)
            .await;
            match ended {
                Ok(0) => failing = false,
                Ok(ended) => {
                    failing = false;
                    tracing::warn!(
                        ended,
                        "ended component backends that outlived every time limit or held an advisory lock"
                    );
                }
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot look for overdue component backends; retrying");
                }
                Err(_) => {}
            }
        }
    }

    fn ready(&self) -> Result<(), DbError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(DbError::Unavailable("the database has not been reached and set up yet".into()))
        }
    }

    /// The component pool and a connection from it for `caller`'s
    /// statement `sql`, once the screen has let it through.
    async fn checkout(&self, caller: &Caller, sql: Option<&str>) -> Result<Checkout, DbError> {
        self.ready()?;
        let (Some(components), Some(grant)) = (&self.components, caller.grant()) else { return Err(no_role()) };
        if let Some(sql) = sql {
            components
                .screen
                .check(grant, sql, Syntax::Postgres)
                .inspect_err(|err| tracing::debug!(error = %err, "screened out"))?;
        }
        Checkout::acquire(&components.conns, until(caller, components.acquire_timeout)).await
    }

    fn classify(err: sqlx::Error) -> DbError {
        classify(err, class_of)
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn query(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<RowSet, DbError> {
        self.ready()?;
        match caller {
            Caller::Host => {
                let mut conn = self.host.acquire().await.map_err(Self::classify)?;
                sql::query::<Self, _>(&mut *conn, sql.to_string(), params, None).await
            }
            Caller::Component { .. } => {
                let deadline = caller.deadline().ok_or_else(no_role)?;
                let mut conn = self.checkout(caller, Some(sql)).await?;
                let rows = conn
                    .run(deadline, async |c| {
                        sql::query::<Self, _>(c, sql.to_string(), params, Some(COMPONENT_RESULT_LIMIT)).await
                    })
                    .await;
                conn.release();
                rows
            }
        }
    }

    async fn execute(&self, caller: &Caller, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.ready()?;
        match caller {
            Caller::Host => {
                let mut conn = self.host.acquire().await.map_err(Self::classify)?;
                sql::execute::<Self, _>(&mut *conn, sql.to_string(), params).await
            }
            Caller::Component { .. } => {
                let deadline = caller.deadline().ok_or_else(no_role)?;
                let mut conn = self.checkout(caller, Some(sql)).await?;
                let affected =
                    conn.run(deadline, async |c| sql::execute::<Self, _>(c, sql.to_string(), params).await).await;
                conn.release();
                affected
            }
        }
    }

    async fn begin(&self, caller: &Caller) -> Result<Box<dyn BackendTransaction>, DbError> {
        self.ready()?;
        match caller {
            Caller::Host => Ok(Box::new(Transaction::Host(self.host.begin().await.map_err(Self::classify)?))),
            Caller::Component { .. } => {
                let deadline = caller.deadline().ok_or_else(no_role)?;
                let mut conn = self.checkout(caller, None).await?;
                conn.begin(deadline).await?;
                let screen = self.components.as_ref().map(|c| c.screen.clone()).ok_or_else(no_role)?;
                Ok(Box::new(Transaction::Component { conn, caller: caller.clone(), screen }))
            }
        }
    }

    async fn begin_snapshot(&self) -> Result<Box<dyn BackendTransaction>, DbError> {
        let mut tx = self.begin(&Caller::Host).await?;
        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", Vec::new()).await?;
        Ok(tx)
    }

    /// Both roles' connections answer.
    async fn ping(&self) -> Result<(), DbError> {
        self.ready()?;
        let mut conn = self.host.acquire().await.map_err(Self::classify)?;
        sqlx::raw_sql("SELECT 1").execute(&mut *conn).await.map_err(Self::classify)?;
        if let Some(components) = &self.components {
            let mut lent = components.conns.acquire(until(&Caller::Host, components.acquire_timeout)).await?;
            match sqlx::raw_sql("SELECT 1").execute(lent.conn()?).await {
                Ok(_) => lent.give_back(),
                Err(err) => {
                    lent.lost();
                    return Err(Self::classify(err));
                }
            }
        }
        Ok(())
    }

    fn pool_stats(&self) -> (u32, usize) {
        match &self.components {
            Some(components) => components.conns.stats(),
            None => (self.host.size(), self.host.num_idle()),
        }
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
                    && let Ok(mut listener) = PgListener::connect_with(&db.host).await
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
        match self {
            Transaction::Host(tx) => sql::query::<Postgres, _>(&mut **tx, sql.to_string(), params, None).await,
            Transaction::Component { conn, caller, screen } => {
                let (Some(grant), Some(deadline)) = (caller.grant(), caller.deadline()) else { return Err(no_role()) };
                screen.check(grant, sql, Syntax::Postgres)?;
                let sql = sql.to_string();
                conn.run(deadline, async |c| {
                    sql::query::<Postgres, _>(c, sql, params, Some(COMPONENT_RESULT_LIMIT)).await
                })
                .await
            }
        }
    }

    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        match self {
            Transaction::Host(tx) => sql::execute::<Postgres, _>(&mut **tx, sql.to_string(), params).await,
            Transaction::Component { conn, caller, screen } => {
                let (Some(grant), Some(deadline)) = (caller.grant(), caller.deadline()) else { return Err(no_role()) };
                screen.check(grant, sql, Syntax::Postgres)?;
                let sql = sql.to_string();
                conn.run(deadline, async |c| sql::execute::<Postgres, _>(c, sql, params).await).await
            }
        }
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        match *self {
            Transaction::Host(tx) => tx.commit().await.map_err(Postgres::classify),
            Transaction::Component { mut conn, caller, .. } => {
                let deadline = caller.deadline().ok_or_else(no_role)?;
                conn.commit(deadline).await?;
                conn.release();
                Ok(())
            }
        }
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

fn no_role() -> DbError {
    DbError::Other("a component's statement needs the component role (DB_COMPONENT_USER)".into())
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
        sql: String,
        params: Vec<Value>,
    ) -> Query<'static, sqlx::Postgres, <sqlx::Postgres as sqlx::Database>::Arguments> {
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
        // Insufficient privilege: the component role may not do that.
        "42501" => ErrorClass::Forbidden,
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
            ("42501", ErrorClass::Forbidden),
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
