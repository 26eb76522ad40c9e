//! The host's Prometheus metrics, one registry per process. The names are
//! the contract in docs/observability.md, which the alerts in k8s/ rely on.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request latency buckets (seconds): fine below 10 ms where the service
/// lives, with a boundary at 0.5 s for the p95 > 500 ms alert.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Instantiation and database calls are far below a millisecond when well.
const FAST_BUCKETS: &[f64] =
    &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_errors: IntCounterVec,
    pub http_in_flight: IntGauge,
    pub http_abandoned: IntCounter,
    pub http_connections_open: IntGaugeVec,
    pub http_connections_closed: IntCounterVec,
    pub http_connection_cap_reached: IntCounterVec,
    pub instantiation: HistogramVec,
    pub instance_reuses: IntCounterVec,
    pub traps: IntCounterVec,
    pub timeouts: IntCounterVec,
    pub swaps: IntCounterVec,
    pub component_info: IntGaugeVec,
    pub version_requests: IntCounterVec,
    pub version_errors: IntCounterVec,
    pub version_duration: HistogramVec,
    pub replica_state: IntGaugeVec,
    pub canary_state: IntGaugeVec,
    pub contention_retries: IntCounterVec,
    pub db_duration: HistogramVec,
    pub db_pool: IntGaugeVec,
    pub db_refused: IntCounterVec,
    pub artifacts_refused: IntCounterVec,
    pub admin_auth_failures: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: &[f64]|
         -> prometheus::Result<HistogramVec> {
            register(&registry, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?)
        };
        let metrics = Metrics {
            http_requests: counter(
                "petstore_http_requests_total",
                "Requests answered on the public port.",
                &["route", "method", "status"],
            )?,
            http_duration: histogram(
                "petstore_http_request_duration_seconds",
                "Time from request to response head.",
                &["route", "method"],
                LATENCY_BUCKETS,
            )?,
            http_errors: counter(
                "petstore_http_request_errors_total",
                "Requests answered with a 5xx.",
                &["route", "method", "status"],
            )?,
            http_in_flight: register(
                &registry,
                IntGauge::new("petstore_http_requests_in_flight", "Requests being answered right now.")?,
            )?,
            http_abandoned: register(
                &registry,
                IntCounter::new(
                    "petstore_http_requests_abandoned_total",
                    "Requests dropped before an answer was made (client gone, or cut at shutdown).",
                )?,
            )?,
            http_connections_open: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("petstore_http_connections_open", "Client connections open."),
                    &["listener"],
                )?,
            )?,
            http_connections_closed: counter(
                "petstore_http_connections_closed_total",
                "Client connections the server closed: a header not received within HEADER_TIMEOUT_MS (header_timeout), idle past KEEPALIVE_TIMEOUT_MS (idle_timeout), or idle the longest when a new client needed the slot (reclaimed).",
                &["listener", "reason"],
            )?,
            http_connection_cap_reached: counter(
                "petstore_http_connection_cap_reached_total",
                "Clients accepted while every one of MAX_CONNECTIONS slots was taken (each took an idle connection's slot, or waited for one).",
                &["listener"],
            )?,
            instantiation: histogram(
                "petstore_component_instantiation_seconds",
                "Time to instantiate a component for one request.",
                &["component"],
                FAST_BUCKETS,
            )?,
            instance_reuses: counter(
                "petstore_component_instance_reuses_total",
                "Requests served by a warm instance instead of a fresh one (INSTANCE_REUSE > 1).",
                &["component"],
            )?,
            traps: counter("petstore_component_traps_total", "Requests whose handler trapped.", &["component"])?,
            timeouts: counter(
                "petstore_component_timeouts_total",
                "Requests whose handler ran past REQUEST_TIMEOUT_MS.",
                &["component"],
            )?,
            swaps: counter("petstore_component_swaps_total", "Hot swaps of a component.", &["component", "result"])?,
            component_info: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("petstore_component_info", "1 for each component version this replica serves."),
                    &["component", "digest"],
                )?,
            )?,
            version_requests: counter(
                "petstore_component_version_requests_total",
                "Requests a component version ran (stable or canary).",
                &["component", "digest"],
            )?,
            version_errors: counter(
                "petstore_component_version_errors_total",
                "Requests a component version failed: a 5xx of its own, a trap or the deadline.",
                &["component", "digest"],
            )?,
            version_duration: histogram(
                "petstore_component_version_duration_seconds",
                "Time a component version took to answer a request, its instance's start included.",
                &["component", "digest"],
                LATENCY_BUCKETS,
            )?,
            replica_state: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "petstore_fleet_replica_state",
                        "1 for where this replica stands with each component's active version (converged, loading, failed).",
                    ),
                    &["component", "state"],
                )?,
            )?,
            canary_state: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "petstore_canary_state",
                        "1 for the state (running, promoted, rolled_back, aborted) of each component's latest canary, as the registry records it.",
                    ),
                    &["component", "digest", "state"],
                )?,
            )?,
            contention_retries: counter(
                "petstore_db_contention_retries_total",
                "Requests run again because their transaction lost to a concurrent one before committing anything.",
                &["component"],
            )?,
            db_duration: histogram(
                "petstore_db_query_duration_seconds",
                "Database calls made for components.",
                &["operation"],
                FAST_BUCKETS,
            )?,
            db_pool: register(
                &registry,
                IntGaugeVec::new(Opts::new("petstore_db_pool_connections", "The database pool."), &["state"])?,
            )?,
            db_refused: counter(
                "petstore_db_statements_refused_total",
                "Statements a component sent that reach outside its grant (another table, the schema, a session setting, a file), refused.",
                &["component"],
            )?,
            artifacts_refused: counter(
                "petstore_component_artifacts_refused_total",
                "Compiled artifacts refused because this fleet's key does not vouch for them (compiled instead).",
                &["source"],
            )?,
            admin_auth_failures: register(
                &registry,
                IntCounter::new(
                    "petstore_admin_auth_failures_total",
                    "Admin API calls refused for a missing or wrong token, or throttled after too many.",
                )?,
            )?,
            registry,
        };
        // Series with labels known at start exist from the first scrape, at
        // zero, so rate() and the alerts see them before their first event.
        for source in ["cache", "registry"] {
            metrics.artifacts_refused.with_label_values(&[source]);
        }
        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(metrics)
    }

    /// Make the per-component series of `component` exist, at zero, before
    /// their first event (Prometheus' instrumentation guide): a trap alert's
    /// rate() then sees the first trap, not a series appearing from nothing.
    pub fn known_component(&self, component: &str) {
        for counter in [&self.instance_reuses, &self.traps, &self.timeouts, &self.contention_retries, &self.db_refused]
        {
            counter.with_label_values(&[component]);
        }
        for result in ["ok", "rejected"] {
            self.swaps.with_label_values(&[component, result]);
        }
        self.instantiation.with_label_values(&[component]);
    }

    /// `digest` of `component` is served here: its series exist from now,
    /// at zero.
    pub fn known_version(&self, component: &str, digest: &str) {
        self.component_info.with_label_values(&[component, digest]).set(1);
        self.version_requests.with_label_values(&[component, digest]);
        self.version_errors.with_label_values(&[component, digest]);
        self.version_duration.with_label_values(&[component, digest]);
    }

    /// `digest` of `component` is no longer served here: its series go, so
    /// that swaps do not grow the scrape.
    pub fn forget_version(&self, component: &str, digest: &str) {
        let _ = self.component_info.remove_label_values(&[component, digest]);
        for counter in [&self.version_requests, &self.version_errors] {
            let _ = counter.remove_label_values(&[component, digest]);
        }
        let _ = self.version_duration.remove_label_values(&[component, digest]);
    }

    /// Make the series of the listener `name` exist, at zero, from its start.
    pub fn known_listener(&self, name: &str) {
        self.http_connections_open.with_label_values(&[name]);
        self.http_connection_cap_reached.with_label_values(&[name]);
        for reason in ["header_timeout", "idle_timeout", "reclaimed"] {
            self.http_connections_closed.with_label_values(&[name, reason]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding text into a Vec cannot fail for well-formed metric families.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `metric`, registered in `registry` (which keeps a handle on it).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> prometheus::Result<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}
