//! Telemetry used by every layer: JSON logs, Prometheus metrics and
//! OpenTelemetry traces. It depends on no other module of the host.

pub mod logging;
mod metrics;
pub mod traces;

pub use metrics::Metrics;
