//! JSON log lines on stdout via tracing, filtered by `LOG_LEVEL`, and the
//! OpenTelemetry layer beside them when traces are exported.

use std::fmt;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::traces;

/// Where log lines go: the service logs to stdout (what container runtimes
/// collect); command-line tools log to stderr, keeping stdout for data.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Keeps the log writer and the trace exporter alive; dropping it writes
/// what is buffered and sends the spans not sent yet.
pub struct Flush {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
    traces: Option<SdkTracerProvider>,
}

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "traces not all sent at exit");
        }
    }
}

/// Install the global subscriber: JSON lines at `level`, fields at the top
/// level of each line (log shippers index `request_id`, `status`, …
/// directly), and, when `traced` and the environment names an exporter,
/// OpenTelemetry spans.
pub fn init(level: &str, output: Output, traced: bool) -> Result<Flush, opentelemetry_otlp::ExporterBuildError> {
    let traces = if traced { traces::provider_from_env()? } else { None };
    let (writer, guard) = match output {
        Output::Stdout => {
            let (writer, guard) =
                tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stdout());
            (BoxMakeWriter::new(writer), Some(guard))
        }
        Output::Stderr => (BoxMakeWriter::new(std::io::stderr), None),
    };
    subscriber(level, writer, traces.as_ref()).init();
    Ok(Flush { _writer: guard, traces })
}

/// The subscriber [`init`] installs. Without a trace exporter it has no
/// trace layer at all: an absent layer (`Option::None`) would count as one
/// that wants every span, and keep each request's spans alive in the
/// registry, entered and left at every poll, for nobody.
fn subscriber(level: &str, writer: BoxMakeWriter, traces: Option<&SdkTracerProvider>) -> Dispatch {
    // sqlx reports PostgreSQL's harmless NOTICEs ("… already exists,
    // skipping") at info: keep them out unless asked for by name. Spans
    // for traces are never log lines.
    let quiet = format!("sqlx::postgres::notice=warn,{}=off", traces::TARGET);
    let filter =
        EnvFilter::try_new(format!("{quiet},{level}")).unwrap_or_else(|_| EnvFilter::new(format!("{quiet},info")));
    let json =
        tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(false).with_span_list(false);
    let lines = tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(WithTraceId { json, traced: traces.is_some() })
        .with_writer(writer)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(lines);
    match traces {
        Some(provider) => Dispatch::new(registry.with(traces::layer(provider))),
        None => Dispatch::new(registry),
    }
}

/// Every line written inside a traced span names its trace (`trace_id`),
/// whatever logged it: a line leads to its trace, and its trace to the
/// request's other lines. Untraced (no exporter), lines are the JSON
/// formatter's own and nothing is looked up.
struct WithTraceId<F> {
    json: F,
    traced: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let Some(trace_id) = self.traced.then(traces::current_trace_id).flatten() else {
            return self.json.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.json.format_event(ctx, Writer::new(&mut line), event)?;
        // A line that names its trace already (an unescaped key) stays as it is.
        match line.strip_prefix('{') {
            Some(rest) if !line.contains("\"trace_id\":") => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            _ => writer.write_str(&line),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_span_disabled(traces: Option<&SdkTracerProvider>) -> bool {
        let dispatch = subscriber("info", BoxMakeWriter::new(std::io::sink), traces);
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!(target: traces::TARGET, "statement").is_disabled()
        })
    }

    #[test]
    fn trace_spans_cost_nothing_without_an_exporter() {
        assert!(trace_span_disabled(None), "a trace span was made with no exporter to send it to");
    }

    #[test]
    fn trace_spans_are_made_when_exported() {
        let provider = SdkTracerProvider::builder().build();
        assert!(!trace_span_disabled(Some(&provider)));
    }

    #[test]
    fn log_lines_at_the_level_still_pass() {
        let dispatch = subscriber("info", BoxMakeWriter::new(std::io::sink), None);
        tracing::dispatcher::with_default(&dispatch, || {
            assert!(tracing::enabled!(target: "access", tracing::Level::INFO));
            assert!(!tracing::enabled!(target: "access", tracing::Level::DEBUG));
        });
    }
}
