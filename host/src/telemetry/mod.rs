//! Telemetry used by every layer: JSON logs and Prometheus metrics. It
//! depends on no other module of the host.

pub mod logging;
mod metrics;

pub use metrics::Metrics;
