//! Start-up and the serve loop: open the database, load the route table and
//! every component (failing before listening if anything is wrong), then
//! serve the public port until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::host_api::{HandlerSettings, Shared};
use crate::http::{self, App, CorsOrigins};
use crate::routing::RouteTable;
use crate::runtime::{PoolLimits, Runtime};
use crate::storage::{self, Database, PoolOptions};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let database = Database::open(
        &config.database_url,
        &PoolOptions { max_connections: config.db_pool_size, acquire_timeout: config.db_acquire_timeout },
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
    });
    let limits =
        PoolLimits { instances: config.instance_limit, memory_bytes: config.instance_memory_mb as usize * 1024 * 1024 };
    let timeout = config.request_timeout;
    let files = routes.components();
    // Compiling is CPU-bound; keep it off the async workers.
    let runtime = tokio::task::spawn_blocking(move || {
        let files: Vec<(String, &std::path::Path)> = files.iter().map(|(n, p)| (n.clone(), p.as_path())).collect();
        Runtime::new(limits, timeout, shared, &files)
    })
    .await??;
    for route in routes.routes() {
        tracing::info!(prefix = route.prefix, component = route.component, "route loaded");
    }

    let draining = Arc::new(AtomicBool::new(false));
    let app = Arc::new(App {
        runtime: Arc::new(runtime),
        routes,
        api_version: config.api_version.clone(),
        environment: config.environment.as_str(),
        draining: draining.clone(),
    });
    let router = http::public_router(app, CorsOrigins(config.cors_origins.clone().into()))?;

    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], config.port)))
        .await
        .with_context(|| format!("cannot listen on port {}", config.port))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            draining.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: draining in-flight requests");
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM (what Kubernetes and container runtimes send, also to PID 1) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; only Ctrl-C will stop the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
