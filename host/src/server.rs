//! Start-up, the serve loop and shutdown.
//!
//! Start-up opens the database, loads the route table and every component
//! (failing before listening if anything is wrong), then serves the public
//! and admin ports. Shutdown, on SIGTERM or SIGINT, goes in three phases:
//! 1. draining: readiness answers 503 at once, but the listener keeps
//!    accepting for `SHUTDOWN_GRACE_MS`, while load balancers deregister us;
//! 2. closing: no new connections; in-flight requests finish, for at most
//!    `SHUTDOWN_DRAIN_MS`;
//! 3. exit 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::host_api::{HandlerSettings, Shared};
use crate::http::{self, Admin, App, ConnectionLimits, CorsOrigins};
use crate::routing::RouteTable;
use crate::runtime::{self, PoolLimits, Runtime};
use crate::storage::{self, ConnectOptions, Database};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closing,
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before anything can announce readiness: a signal that arrives early
    // must start a graceful shutdown, not kill the process (or, as PID 1 in
    // a container, be ignored).
    let signals = Signals::install()?;
    let metrics = Arc::new(Metrics::new()?);
    let database = Database::open(
        &config.database_url,
        &ConnectOptions {
            max_connections: config.db_pool_size,
            acquire_timeout: config.db_acquire_timeout,
            statement_timeout: config.db_statement_timeout,
            user: config.db_user.clone(),
            password: config.db_password.clone(),
        },
    )
    .await
    .with_context(|| format!("cannot open the database at {}", storage::redact(&config.database_url)))?;

    let routes = Arc::new(RouteTable::load(&config.components_dir)?);
    let shared = Arc::new(Shared {
        database,
        settings: HandlerSettings {
            api_version: config.api_version.clone(),
            pagination_limit: config.pagination_limit,
            pagination_max: config.pagination_max,
        },
        metrics: metrics.clone(),
    });
    let limits = pool_limits(&config);
    let timeout = config.request_timeout;
    let files = routes.components();
    let runtime_metrics = metrics.clone();
    let load_files = files.clone();
    // Compiling is CPU-bound; keep it off the async workers.
    let runtime = tokio::task::spawn_blocking(move || {
        let files: Vec<(String, &std::path::Path)> = load_files.iter().map(|(n, p)| (n.clone(), p.as_path())).collect();
        Runtime::new(limits, timeout, shared, runtime_metrics, &files)
    })
    .await??;
    let runtime = Arc::new(runtime);
    for route in routes.routes() {
        tracing::info!(prefix = route.prefix, component = route.component, "route loaded");
    }

    let draining = Arc::new(AtomicBool::new(false));
    let openapi = http::openapi::document(&http::openapi::Settings {
        api_version: &config.api_version,
        pagination_limit: config.pagination_limit,
        pagination_max: config.pagination_max,
    })
    .context("the OpenAPI document in the binary is not JSON")?;
    let app = Arc::new(App {
        openapi: openapi.into(),
        runtime: runtime.clone(),
        routes: routes.clone(),
        api_version: config.api_version.clone(),
        environment: config.environment.as_str(),
        body_timeout: config.body_timeout,
        draining: draining.clone(),
        metrics: metrics.clone(),
    });
    let public = http::public_router(app, CorsOrigins(config.cors_origins.clone().into()))?;
    let admin = http::admin_router(Arc::new(Admin {
        runtime: runtime.clone(),
        routes,
        metrics: metrics.clone(),
        token: config.admin_token.clone(),
    }));

    let public_listener = listen(config.port).await?;
    let admin_listener = listen(config.admin_port).await?;
    tracing::info!(
        addr = %public_listener.local_addr()?,
        admin_addr = %admin_listener.local_addr()?,
        admin_api = config.admin_token.is_some(),
        "listening"
    );

    let watcher = config.components_watch.then(|| tokio::spawn(runtime::watch(runtime.clone(), files)));
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        keepalive_timeout: config.keepalive_timeout,
    };
    ensure_descriptors(limits.max_connections, config.db_pool_size);
    let admin_server =
        tokio::spawn(http::serve(admin_listener, "admin", admin, limits, metrics.clone(), std::future::pending()));

    let (phase_tx, phase) = watch::channel(Phase::Serving);
    let grace = config.shutdown_grace;
    tokio::spawn(async move {
        signals.received().await;
        draining.store(true, Ordering::Relaxed);
        let _ = phase_tx.send(Phase::Draining);
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: readiness is 503, still accepting");
        tokio::time::sleep(grace).await;
        let _ = phase_tx.send(Phase::Closing);
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
    });
    let closing = reached(phase.clone(), Phase::Closing);
    let mut public_server =
        tokio::spawn(http::serve(public_listener, "public", public, limits, metrics.clone(), closing));

    tokio::select! {
        served = &mut public_server => {
            // The server stopped without a shutdown signal: it panicked.
            served?;
        }
        _ = reached(phase, Phase::Closing) => {
            match tokio::time::timeout(config.shutdown_drain, &mut public_server).await {
                Ok(served) => served?,
                Err(_) => tracing::warn!(
                    drain_ms = config.shutdown_drain.as_millis() as u64,
                    "drain deadline passed; stopping with requests still in flight"
                ),
            }
        }
    }
    admin_server.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    tracing::info!(in_flight = metrics.http_in_flight.get(), abandoned = metrics.http_abandoned.get(), "stopped");
    Ok(())
}

pub fn pool_limits(config: &Config) -> PoolLimits {
    PoolLimits {
        instances: config.instance_limit,
        memory_bytes: config.instance_memory_mb as usize * 1024 * 1024,
        reuse: config.instance_reuse,
    }
}

/// Make sure the process may open a descriptor for every connection on both
/// ports, the database pool and its own files: raise the soft limit toward
/// the hard one if needed, and say so when even that is not enough (accepts
/// would then fail with EMFILE before the cap is reached).
fn ensure_descriptors(max_connections: u32, db_pool_size: u32) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const OWN_FILES: u64 = 64;
    let needed = 2 * u64::from(max_connections) + u64::from(db_pool_size) + OWN_FILES;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return;
    }
    let raised = needed.min(limit.maximum.unwrap_or(u64::MAX));
    let set = raised > current
        && setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum }).is_ok();
    if !set || raised < needed {
        tracing::warn!(
            needed,
            limit = if set { raised } else { current },
            "MAX_CONNECTIONS needs more file descriptors than the process may open; lower it or raise the limit"
        );
    }
}

async fn listen(port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .await
        .with_context(|| format!("cannot listen on port {port}"))
}

/// Resolves once the shutdown has reached `target`.
async fn reached(mut phase: watch::Receiver<Phase>, target: Phase) {
    let rank = |p: Phase| p as u8;
    // An error means the sender is gone: shutdown can no longer progress.
    while rank(*phase.borrow_and_update()) < rank(target) {
        if phase.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM (what Kubernetes and container runtimes send, also to PID 1) and
/// SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
