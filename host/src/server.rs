//! The service: [`Service::build`] does everything that can fail before a
//! client is served (database, route table, components, listeners), and
//! [`Service::serve`] serves the public and admin ports until a graceful
//! shutdown (see [`crate::shutdown`]) has drained them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::fleet::{self, Fleet, SignaturePolicy};
use crate::host_api::{HandlerSettings, Shared};
use crate::http::{self, Admin, App, ConnectionLimits, CorsOrigins, MetricsPort, Throttle};
use crate::routing::RouteTable;
use crate::runtime::{PoolLimits, Runtime};
use crate::shutdown::{self, Phase, Shutdown, ShutdownState, Signals};
use crate::storage::{self, ComponentAccess, ConnectOptions, Database, Databases, Grant};
use crate::telemetry::Metrics;

/// A service ready to serve.
pub struct Service {
    config: Config,
    signals: Signals,
    metrics: Arc<Metrics>,
    fleet: Arc<Fleet>,
    /// Component files by name, for `COMPONENTS_WATCH`.
    files: Vec<(String, std::path::PathBuf)>,
    public: (TcpListener, axum::Router),
    admin: (TcpListener, axum::Router),
    metrics_port: (TcpListener, axum::Router),
    shutdown: (Shutdown, ShutdownState),
}

impl Service {
    /// Open the database, load the route table and every component, and bind
    /// both ports: anything wrong stops start-up here, before listening.
    pub async fn build(config: Config) -> anyhow::Result<Service> {
        let signals = Signals::install()?;
        let (driver, shutdown) = shutdown::channel();
        let metrics = Arc::new(Metrics::new()?);
        let routes = Arc::new(RouteTable::load(&config.components_dir)?);
        let grants: HashMap<String, Arc<Grant>> = routes
            .components()
            .into_iter()
            .map(|(name, _)| {
                let grant = Grant::new(&name, routes.tables_of(&name));
                (name, Arc::new(grant))
            })
            .collect();
        let access = ComponentAccess {
            user: config.db_component_user.clone(),
            password: config.db_component_password.clone(),
            grants: grants.values().map(|g| (**g).clone()).collect(),
        };
        let Databases { data: database, registry } =
            Database::open(&config.database_url, &connect_options(&config, Some(access)))
                .await
                .with_context(|| format!("cannot open the database at {}", storage::redact(&config.database_url)))?;
        let shared = Arc::new(Shared {
            database: database.clone(),
            grants,
            settings: HandlerSettings {
                api_version: config.api_version.clone(),
                pagination_limit: config.pagination_limit,
                pagination_max: config.pagination_max,
            },
            metrics: metrics.clone(),
        });
        let files = routes.components();
        let timeouts = (config.request_timeout, config.canary_max_p95);
        let (limits, load) = (PoolLimits::from_config(&config), files.clone());
        let runtime_metrics = metrics.clone();
        // Compiling is CPU-bound; keep it off the async workers.
        let runtime = tokio::task::spawn_blocking(move || {
            let files: Vec<(String, &std::path::Path)> = load.iter().map(|(n, p)| (n.clone(), p.as_path())).collect();
            Runtime::new(limits, timeouts, shared, runtime_metrics, &files)
        })
        .await??;
        let runtime = Arc::new(runtime);
        let fleet =
            Arc::new(Fleet::new(registry, runtime.clone(), fleet_settings(&config)?, image(&files)?, metrics.clone())?);
        for route in routes.routes() {
            tracing::info!(prefix = route.prefix, component = route.component, "route loaded");
        }
        let openapi = http::openapi::document(&http::openapi::Settings {
            api_version: &config.api_version,
            pagination_limit: config.pagination_limit,
            pagination_max: config.pagination_max,
        })
        .context("the OpenAPI document in the binary is not JSON")?;
        let app = Arc::new(App {
            runtime: runtime.clone(),
            fleet: fleet.clone(),
            database: database.clone(),
            routes: routes.clone(),
            openapi: openapi.into(),
            api_version: config.api_version.clone(),
            environment: config.environment.as_str(),
            body_timeout: config.body_timeout,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
        });
        let public = http::public_router(app, CorsOrigins(config.cors_origins.clone().into()))?;
        let admin = http::admin_router(Arc::new(Admin {
            runtime: runtime.clone(),
            fleet: fleet.clone(),
            routes,
            metrics: metrics.clone(),
            token: config.admin_token.clone(),
            body_timeout: config.body_timeout,
            throttle: Throttle::default(),
        }));
        let metrics_router = http::metrics_router(Arc::new(MetricsPort { metrics: metrics.clone(), database }));
        let public = (listen(config.port).await?, public);
        let admin = (listen(config.admin_port).await?, admin);
        let metrics_port = (listen(config.metrics_port).await?, metrics_router);
        Ok(Service {
            config,
            signals,
            metrics,
            fleet,
            files,
            public,
            admin,
            metrics_port,
            shutdown: (driver, shutdown),
        })
    }

    /// Serve until a signal's graceful shutdown has drained the public port.
    pub async fn serve(self) -> anyhow::Result<()> {
        let (driver, shutdown) = self.shutdown;
        tracing::info!(
            addr = %self.public.0.local_addr()?,
            admin_addr = %self.admin.0.local_addr()?,
            metrics_addr = %self.metrics_port.0.local_addr()?,
            admin_api = self.config.admin_token.is_some(),
            "listening"
        );
        let limits = ConnectionLimits {
            max_connections: self.config.max_connections,
            header_timeout: self.config.header_timeout,
            keepalive_timeout: self.config.keepalive_timeout,
        };
        ensure_descriptors(limits.max_connections, self.config.db_pool_size);
        let syncing = tokio::spawn(self.fleet.clone().run());
        let watcher =
            self.config.components_watch.then(|| tokio::spawn(fleet::watch_files(self.fleet.clone(), self.files)));
        let never = std::future::pending();
        let admin_server =
            tokio::spawn(http::serve(self.admin.0, "admin", self.admin.1, limits, self.metrics.clone(), never));
        let never = std::future::pending();
        let metrics_server = tokio::spawn(http::serve(
            self.metrics_port.0,
            "metrics",
            self.metrics_port.1,
            limits,
            self.metrics.clone(),
            never,
        ));

        self.signals.drive(self.config.shutdown_grace, driver);
        let closing = shutdown.clone().reached(Phase::Closing);
        let mut public_server =
            tokio::spawn(http::serve(self.public.0, "public", self.public.1, limits, self.metrics.clone(), closing));
        tokio::select! {
            served = &mut public_server => served?,
            _ = shutdown.reached(Phase::Closing) => {
                if tokio::time::timeout(self.config.shutdown_drain, &mut public_server).await.is_err() {
                    tracing::warn!(
                        drain_ms = self.config.shutdown_drain.as_millis() as u64,
                        "drain deadline passed; stopping with requests still in flight"
                    );
                }
            }
        }
        admin_server.abort();
        metrics_server.abort();
        syncing.abort();
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        tracing::info!(
            in_flight = self.metrics.http_in_flight.get(),
            abandoned = self.metrics.http_abandoned.get(),
            "stopped"
        );
        Ok(())
    }
}

fn fleet_settings(config: &Config) -> anyhow::Result<fleet::Settings> {
    let policy = SignaturePolicy::from_key(config.component_public_key.clone());
    Ok(fleet::Settings {
        replica: config.replica_id.clone(),
        environment: config.environment.as_str().to_string(),
        policy,
        cache_dir: config.component_cache_dir.clone(),
        versions_kept: config.component_versions_kept,
        sync_every: config.component_sync,
        artifact_key: config.component_artifact_key.as_deref().map(fleet::ArtifactKey::new),
        objectives: fleet::Objectives {
            max_error_rate: config.canary_max_error_rate,
            max_p95: config.canary_max_p95,
            min_requests: config.canary_min_requests.into(),
            max_duration: config.canary_max,
        },
    })
}

/// The image's own component files, by name.
fn image(files: &[(String, std::path::PathBuf)]) -> anyhow::Result<std::collections::HashMap<String, Vec<u8>>> {
    files
        .iter()
        .map(|(name, path)| {
            Ok((name.clone(), std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?))
        })
        .collect()
}

/// How to connect; `components`: how components reach the database (`None`
/// for the commands that run none).
pub fn connect_options(config: &Config, components: Option<ComponentAccess>) -> ConnectOptions {
    ConnectOptions {
        components,
        max_connections: config.db_pool_size,
        acquire_timeout: config.db_acquire_timeout,
        statement_timeout: config.db_statement_timeout,
        user: config.db_user.clone(),
        password: config.db_password.clone(),
    }
}

/// Make sure the process may open a descriptor for every connection on the
/// three ports, the database pools and its own files: raise the soft limit toward
/// the hard one if needed, and say so when even that is not enough (accepts
/// would then fail with EMFILE before the cap is reached).
fn ensure_descriptors(max_connections: u32, db_pool_size: u32) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    const OWN_FILES: u64 = 64;
    let needed = 3 * u64::from(max_connections) + 2 * u64::from(db_pool_size) + OWN_FILES;
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
