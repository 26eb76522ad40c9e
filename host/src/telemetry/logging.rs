//! JSON log lines on stdout via tracing, filtered by `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;

/// Install the global JSON subscriber. Fields sit at the top level of each
/// line, so log shippers index `request_id`, `status`, … directly.
pub fn init(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}
