//! JSON log lines on stdout via tracing, filtered by `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;

/// Where log lines go: the service logs to stdout (what container runtimes
/// collect); command-line tools log to stderr, keeping stdout for data.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Install the global JSON subscriber. Fields sit at the top level of each
/// line, so log shippers index `request_id`, `status`, … directly.
pub fn init(level: &str, output: Output) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    // sqlx reports PostgreSQL's harmless NOTICEs ("… already exists,
    // skipping") at info: keep them out unless asked for by name.
    let filter =
        EnvFilter::try_new(format!("sqlx::postgres::notice=warn,{level}")).unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter);
    match output {
        Output::Stdout => {
            let (writer, guard) =
                tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stdout());
            subscriber.with_writer(writer).init();
            Some(guard)
        }
        Output::Stderr => {
            subscriber.with_writer(std::io::stderr).init();
            None
        }
    }
}

/// Errors that carry a backtrace (anyhow, wasmtime traps) would capture and
/// symbolize one per guest trap when `RUST_BACKTRACE` is set: costly in time
/// and memory on a hot path. Panics still get backtraces from `RUST_BACKTRACE`.
/// Call before any other thread starts.
pub fn no_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called at the start of main, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}
