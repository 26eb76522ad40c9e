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
//! of their own that are reset after any use that may have changed their
//! session (`pool.rs`), and stopped at their request's deadline
//! (`checkout.rs`).

mod checkout;
mod dialect;
mod pool;
mod roles;
mod sweep;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use self::checkout::Checkout;
use self::pool::Conns;
use super::backend::{Backend, BackendTransaction};
use super::screen::{Screen, Session};
use super::sql;
use super::statement::Syntax;
use super::{COMPONENT_RESULT_LIMIT, Caller, ConnectOptions, DbError, RowSet, Value, until};

/// Longest wait between two attempts to reach a database that is down.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The host's pool when components have their own: the registry's sync,
/// an upload, a health check.
const HOST_POOL_SIZE: u32 = 4;

/// How often a backend running a component's statement checks that its
/// client is still there: a statement whose request passed its deadline
/// has its connection closed, and its backend stops within this.
const CLIENT_CHECK_MS: u32 = 200;

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
                        tokio::spawn(sweep::end_overdue_backends(self.host.clone(), role, statement_timeout));
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
        let session = match sql {
            Some(sql) => components
                .screen
                .check(grant, sql, Syntax::Postgres)
                .inspect_err(|err| tracing::debug!(error = %err, "screened out"))?,
            None => Session::Kept,
        };
        let mut conn = Checkout::acquire(&components.conns, until(caller, components.acquire_timeout)).await?;
        conn.will_run(session);
        Ok(conn)
    }

    fn classify(err: sqlx::Error) -> DbError {
        sql::classify(err, dialect::class_of)
    }
}

#[async_trait]
impl Backend for Postgres {
    fn syntax(&self) -> Syntax {
        Syntax::Postgres
    }

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
                Ok(_) => lent.give_back(Session::Kept),
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
                conn.will_run(screen.check(grant, sql, Syntax::Postgres)?);
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
                conn.will_run(screen.check(grant, sql, Syntax::Postgres)?);
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
    /// The counting triggers skip a restore's rows (migration 0008): one
    /// count at the end instead of a new version of a count row per row.
    async fn before_restore(&mut self) -> Result<(), DbError> {
        self.execute("SET LOCAL petstore.restoring = 'on'", Vec::new()).await.map(drop)
    }

    async fn after_restore(&mut self) -> Result<(), DbError> {
        for table in ["pets", "orders"] {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
            );
            self.query(&sql, Vec::new()).await?;
        }
        for sql in [
            "DELETE FROM pet_status_counts",
            "DELETE FROM pet_species_counts",
            "DELETE FROM order_status_counts",
            "INSERT INTO pet_status_counts SELECT status, 0, count(*) FROM pets GROUP BY status",
            "INSERT INTO pet_species_counts SELECT species, status, 0, count(*) FROM pets GROUP BY species, status",
            "INSERT INTO order_status_counts SELECT status, 0, count(*) FROM orders GROUP BY status",
            "SET LOCAL petstore.restoring = 'off'",
        ] {
            self.execute(sql, Vec::new()).await?;
        }
        Ok(())
    }
}

fn no_role() -> DbError {
    DbError::Other("a component's statement needs the component role (DB_COMPONENT_USER)".into())
}
