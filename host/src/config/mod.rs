//! Configuration from the environment (the README's table: the contract's
//! settings plus the host's own tuning knobs). Every value is checked at
//! start; a bad one names its variable and stops start-up.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A variable with a value the service cannot use.
#[derive(Debug, Error)]
#[error("invalid {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError { variable, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PORT`: the public API.
    pub port: u16,
    /// `ADMIN_PORT`: the admin API; never exposed publicly.
    pub admin_port: u16,
    /// `METRICS_PORT`: Prometheus metrics alone, so that what may scrape
    /// them need not reach the admin API.
    pub metrics_port: u16,
    /// `DATABASE_URL`: `sqlite://…` (default `sqlite://petstore.db`) or
    /// `postgres://…` (TLS parameters such as `sslmode` and `sslrootcert` apply).
    pub database_url: String,
    /// `DB_USER` / `DB_PASSWORD`: credentials for a PostgreSQL URL without any.
    pub db_user: Option<String>,
    pub db_password: Option<String>,
    /// `DB_COMPONENT_USER` / `DB_COMPONENT_PASSWORD`: the PostgreSQL login
    /// role components' statements run as (required with PostgreSQL).
    pub db_component_user: Option<String>,
    pub db_component_password: Option<String>,
    pub environment: Environment,
    /// `LOG_LEVEL`: `trace` … `error` (any case), or a tracing filter directive.
    pub log_level: String,
    /// `CORS_ORIGINS`: exact origins allowed to call from a browser.
    pub cors_origins: Vec<String>,
    pub api_version: String,
    pub pagination_limit: u32,
    pub pagination_max: u32,
    /// `COMPONENTS_DIR`: holds `routes.toml` and the component files it names.
    pub components_dir: PathBuf,
    /// `REQUEST_TIMEOUT_MS`: a handler running longer is stopped with 504.
    pub request_timeout: Duration,
    /// `ADMIN_TOKEN`: enables the admin API when set.
    pub admin_token: Option<String>,
    /// `DB_POOL_SIZE`: database connections.
    pub db_pool_size: u32,
    /// `DB_ACQUIRE_TIMEOUT_MS`: how long a request waits for a connection before 503.
    pub db_acquire_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: PostgreSQL's `statement_timeout`.
    pub db_statement_timeout: Duration,
    /// `INSTANCE_LIMIT`: component instances alive at once (the pool's size).
    pub instance_limit: u32,
    /// `INSTANCE_MEMORY_MB`: the linear memory one instance may grow to.
    pub instance_memory_mb: u32,
    /// `INSTANCE_REUSE`: requests one instance may serve; 1 is a fresh
    /// instance per request (strict isolation).
    pub instance_reuse: u32,
    /// `SHUTDOWN_GRACE_MS`: after SIGTERM, how long the listener keeps
    /// accepting (readiness already 503) so load balancers deregister the pod.
    pub shutdown_grace: Duration,
    /// `SHUTDOWN_DRAIN_MS`: then, how long in-flight requests may take to finish.
    pub shutdown_drain: Duration,
    /// `COMPONENTS_WATCH`: swap in a component file that changes on disk.
    pub components_watch: bool,
    /// `MAX_CONNECTIONS`: client connections open at once, per port; at the
    /// cap new clients wait in the kernel's accept queue.
    pub max_connections: u32,
    /// `HEADER_TIMEOUT_MS`: from a request's first byte to the end of its header.
    pub header_timeout: Duration,
    /// `BODY_TIMEOUT_MS`: to receive a request's body once its header came.
    pub body_timeout: Duration,
    /// `KEEPALIVE_TIMEOUT_MS`: an idle connection is closed after this long
    /// (keep it above the load balancer's idle timeout: 60 s on an ALB).
    pub keepalive_timeout: Duration,
    /// `COMPONENT_PUBLIC_KEY` (the key itself) or `COMPONENT_PUBLIC_KEY_FILE`
    /// (a file holding it, e.g. a mounted Secret): the minisign public key
    /// every uploaded component must be signed with. Required in production
    /// when the admin API is on.
    pub component_public_key: Option<minisign_verify::PublicKey>,
    /// `COMPONENT_ARTIFACT_KEY` (hex) or `COMPONENT_ARTIFACT_KEY_FILE`: at
    /// least 256 random bits that authenticate the compiled artifacts
    /// replicas share and cache. Without it nothing compiled is shared.
    pub component_artifact_key: Option<Vec<u8>>,
    /// `COMPONENT_VERSIONS_KEPT`: stored versions kept per component (besides
    /// the active one), for rollbacks without a re-upload.
    pub component_versions_kept: u32,
    /// `COMPONENT_SYNC_MS`: how often a replica checks the registry and
    /// reports its heartbeat (notifications make changes arrive sooner).
    pub component_sync: Duration,
    /// `COMPONENT_CACHE_DIR`: where compiled components are cached (a
    /// writable folder; the root filesystem is read-only).
    pub component_cache_dir: PathBuf,
    /// `POD_NAME` (Kubernetes' downward API), else `HOSTNAME-PID`: this
    /// replica's name in the fleet status.
    pub replica_id: String,
    /// `CANARY_MAX_ERROR_RATE`: a canary whose error rate is over this (with
    /// 95 % confidence) is rolled back (0.01, the error-rate alert's).
    pub canary_max_error_rate: f64,
    /// `CANARY_MAX_P95_MS`: a canary whose p95 is over this is rolled back.
    pub canary_max_p95: Duration,
    /// `CANARY_MIN_REQUESTS`: requests a canary serves before it can be promoted.
    pub canary_min_requests: u32,
    /// `CANARY_MAX_S`: how long a canary may run before it is abandoned.
    pub canary_max: Duration,
}

impl Config {
    /// Read the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read settings through `get`, so tests need not touch the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let environment = match get("ENVIRONMENT").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("development") => Environment::Development,
            Some("staging") => Environment::Staging,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "ENVIRONMENT",
                    format!("{other:?} is not one of development, staging, production"),
                ));
            }
        };
        let pagination_limit = number(&get, "PAGINATION_LIMIT", 20, 1, 10_000)?;
        let pagination_max = number(&get, "PAGINATION_MAX", 100, 1, 10_000)?;
        if pagination_limit > pagination_max {
            return Err(ConfigError::new(
                "PAGINATION_LIMIT",
                format!("{pagination_limit} is above PAGINATION_MAX ({pagination_max})"),
            ));
        }
        let log_level = get("LOG_LEVEL").unwrap_or_else(|| "info".into()).to_ascii_lowercase();
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::new("LOG_LEVEL", format!("{log_level:?} is not a log level")));
        }
        let cors_origins: Vec<String> = get("CORS_ORIGINS")
            .map(|v| v.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect())
            .unwrap_or_default();
        for origin in &cors_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(ConfigError::new(
                    "CORS_ORIGINS",
                    format!("{origin:?} is not an origin like https://example.com"),
                ));
            }
        }
        let database_url = get("DATABASE_URL").unwrap_or_else(|| "sqlite://petstore.db".into());
        let sqlite = database_url.starts_with("sqlite:");
        let postgres = database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        if !sqlite && !postgres {
            return Err(ConfigError::new("DATABASE_URL", "must start with sqlite: or postgres://"));
        }
        if sqlite && environment == Environment::Production {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "ENVIRONMENT=production needs PostgreSQL; SQLite is for development",
            ));
        }
        let admin_token = get("ADMIN_TOKEN");
        // Staging and production hold real data: the admin API needs a
        // strong token and signed uploads there.
        let strict = environment != Environment::Development;
        if strict
            && let Some(token) = &admin_token
            && token.len() < MIN_ADMIN_TOKEN
        {
            let bytes = token.len();
            let message =
                format!("{bytes} bytes; staging and production need at least {MIN_ADMIN_TOKEN} (openssl rand -hex 32)");
            return Err(ConfigError::new("ADMIN_TOKEN", message));
        }
        let component_public_key = secret(&get, "COMPONENT_PUBLIC_KEY", "COMPONENT_PUBLIC_KEY_FILE")?
            .map(|(variable, text)| minisign_public_key(&text).map_err(|message| ConfigError::new(variable, message)))
            .transpose()?;
        if strict && admin_token.is_some() && component_public_key.is_none() {
            let environment = environment.as_str();
            let message =
                format!("ENVIRONMENT={environment} with the admin API on needs the key uploads are signed with");
            return Err(ConfigError::new("COMPONENT_PUBLIC_KEY", message));
        }
        let component_artifact_key = secret(&get, "COMPONENT_ARTIFACT_KEY", "COMPONENT_ARTIFACT_KEY_FILE")?
            .map(|(variable, text)| artifact_key(variable, &text))
            .transpose()?;
        let (db_user, db_password) = (get("DB_USER"), get("DB_PASSWORD"));
        if postgres && (db_user.is_some() || db_password.is_some()) && url_has_credentials(&database_url) {
            return Err(ConfigError::new(
                "DB_USER",
                "DATABASE_URL already carries credentials; give them in one place",
            ));
        }
        Ok(Config {
            port: number(&get, "PORT", 8080, 0, u16::MAX.into())? as u16,
            admin_port: number(&get, "ADMIN_PORT", 9090, 0, u16::MAX.into())? as u16,
            metrics_port: number(&get, "METRICS_PORT", 9091, 0, u16::MAX.into())? as u16,
            database_url,
            db_user,
            db_password,
            db_component_user: get("DB_COMPONENT_USER"),
            db_component_password: get("DB_COMPONENT_PASSWORD"),
            environment,
            log_level,
            cors_origins,
            api_version: get("API_VERSION").unwrap_or_else(|| "1.0.0".into()),
            pagination_limit,
            pagination_max,
            components_dir: PathBuf::from(get("COMPONENTS_DIR").unwrap_or_else(|| "components".into())),
            request_timeout: Duration::from_millis(number(&get, "REQUEST_TIMEOUT_MS", 5000, 1, 600_000)?.into()),
            admin_token,
            db_pool_size: number(&get, "DB_POOL_SIZE", 8, 1, 1000)?,
            db_acquire_timeout: Duration::from_millis(number(&get, "DB_ACQUIRE_TIMEOUT_MS", 3000, 1, 600_000)?.into()),
            db_statement_timeout: Duration::from_millis(
                number(&get, "DB_STATEMENT_TIMEOUT_MS", 5000, 1, 600_000)?.into(),
            ),
            instance_limit: number(&get, "INSTANCE_LIMIT", 128, 1, 10_000)?,
            instance_memory_mb: number(&get, "INSTANCE_MEMORY_MB", 64, 1, 4096)?,
            instance_reuse: number(&get, "INSTANCE_REUSE", 1, 1, 1_000_000)?,
            shutdown_grace: Duration::from_millis(number(&get, "SHUTDOWN_GRACE_MS", 5000, 0, 600_000)?.into()),
            shutdown_drain: Duration::from_millis(number(&get, "SHUTDOWN_DRAIN_MS", 20_000, 0, 600_000)?.into()),
            components_watch: flag(&get, "COMPONENTS_WATCH", false)?,
            max_connections: number(&get, "MAX_CONNECTIONS", 1024, 1, 1_000_000)?,
            header_timeout: millis(&get, "HEADER_TIMEOUT_MS", 10_000)?,
            body_timeout: millis(&get, "BODY_TIMEOUT_MS", 10_000)?,
            keepalive_timeout: millis(&get, "KEEPALIVE_TIMEOUT_MS", 75_000)?,
            component_public_key,
            component_artifact_key,
            component_versions_kept: number(&get, "COMPONENT_VERSIONS_KEPT", 5, 1, 1000)?,
            component_sync: millis(&get, "COMPONENT_SYNC_MS", 5_000)?,
            component_cache_dir: PathBuf::from(
                get("COMPONENT_CACHE_DIR").unwrap_or_else(|| "/tmp/petstore-components".into()),
            ),
            replica_id: get("POD_NAME").unwrap_or_else(|| {
                let host = get("HOSTNAME").unwrap_or_else(|| "petstore".into());
                format!("{host}-{}", std::process::id())
            }),
            canary_max_error_rate: rate(&get, "CANARY_MAX_ERROR_RATE", 0.01)?,
            canary_max_p95: millis(&get, "CANARY_MAX_P95_MS", 500)?,
            canary_min_requests: number(&get, "CANARY_MIN_REQUESTS", 100, 1, 100_000_000)?,
            canary_max: Duration::from_secs(number(&get, "CANARY_MAX_S", 3600, 1, 7 * 24 * 3600)?.into()),
        })
    }
}

/// The shortest admin token staging and production accept (bytes).
const MIN_ADMIN_TOKEN: usize = 32;

/// The shortest artifact key accepted (bytes): 256 bits.
const MIN_ARTIFACT_KEY: usize = 32;

/// A secret given as `VARIABLE` or as a file named by `VARIABLE_FILE` (a
/// mounted Secret), not both: which variable it came from, and its text.
fn secret(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    file_variable: &'static str,
) -> Result<Option<(&'static str, String)>, ConfigError> {
    match (get(variable), get(file_variable)) {
        (Some(_), Some(_)) => Err(ConfigError::new(variable, format!("give it or {file_variable}, not both"))),
        (Some(text), None) => Ok(Some((variable, text))),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|text| Some((file_variable, text)))
            .map_err(|e| ConfigError::new(file_variable, format!("cannot read {path}: {e}"))),
        (None, None) => Ok(None),
    }
}

/// A minisign public key: its base64 line, or the whole `.pub` file.
fn minisign_public_key(text: &str) -> Result<minisign_verify::PublicKey, String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"));
    let key = line.map(minisign_verify::PublicKey::from_base64).ok_or("no key in it")?;
    key.map_err(|e| format!("not a minisign public key: {e}"))
}

/// An artifact key: hex, at least [`MIN_ARTIFACT_KEY`] bytes.
fn artifact_key(variable: &'static str, text: &str) -> Result<Vec<u8>, ConfigError> {
    let text = text.trim();
    let key: Option<Vec<u8>> = text
        .len()
        .is_multiple_of(2)
        .then(|| (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect())
        .flatten();
    match key {
        Some(key) if key.len() >= MIN_ARTIFACT_KEY => Ok(key),
        Some(key) => Err(ConfigError::new(
            variable,
            format!("{} bytes; at least {MIN_ARTIFACT_KEY} random bytes are needed (openssl rand -hex 32)", key.len()),
        )),
        None => Err(ConfigError::new(variable, "is not hex (openssl rand -hex 32)")),
    }
}

/// `scheme://user[:password]@host…`
fn url_has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority.contains('@')
}

/// A boolean variable (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
fn flag(get: &impl Fn(&str) -> Option<String>, variable: &'static str, default: bool) -> Result<bool, ConfigError> {
    match get(variable).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::new(variable, format!("{other:?} is not true or false"))),
    }
}

/// A duration in milliseconds, 1 ms to 10 minutes, or `default` when unset.
fn millis(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u32,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(number(get, variable, default, 1, 600_000)?.into()))
}

/// A rate from 0 to 1, or `default` when unset.
fn rate(get: &impl Fn(&str) -> Option<String>, variable: &'static str, default: f64) -> Result<f64, ConfigError> {
    let Some(raw) = get(variable) else { return Ok(default) };
    match raw.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(ConfigError::new(variable, format!("{raw:?} is not a rate from 0 to 1 (e.g. 0.01 for 1%)"))),
    }
}

/// An integer variable in `min..=max`, or `default` when unset.
fn number(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(raw) = get(variable) else { return Ok(default) };
    match raw.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(variable, format!("{raw:?} is not an integer from {min} to {max}"))),
    }
}

#[cfg(test)]
mod tests;
