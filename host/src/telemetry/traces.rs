//! OpenTelemetry traces, exported over OTLP/HTTP when the standard
//! variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_EXPORTER_OTLP_PROTOCOL`
//! `http/protobuf`, the default, or `http/json`; `OTEL_SERVICE_NAME`,
//! `OTEL_BSP_*`). A request continues the trace of its W3C `traceparent`, or
//! starts one; its spans are the edge's, the component call's and each
//! database statement's (operation and table, never values).
//!
//! Spans for traces have their own target, [`TARGET`], which only the
//! OpenTelemetry layer enables: with no exporter configured nothing is
//! interested in them, and making one costs a check of a static.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The target of every span meant for traces.
pub const TARGET: &str = "petstore::trace";

/// The exporter named by the environment, or `None` when no endpoint is set
/// (or `OTEL_SDK_DISABLED=true`).
pub fn provider_from_env() -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    // The standard's default is protobuf; the exporter would pick JSON, as
    // both are built in, unless told.
    if !set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") && !set("OTEL_EXPORTER_OTLP_PROTOCOL") {
        exporter = exporter.with_protocol(Protocol::HttpBinary);
    }
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("petstore");
    }
    let provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter.build()?).with_resource(resource.build()).build();
    Ok(Some(provider))
}

/// The layer that turns [`TARGET`] spans into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("petstore"))
        .with_filter(Targets::new().with_target(TARGET, LevelFilter::INFO))
}

/// Continue the trace a request's `traceparent` names, if any: `span`
/// becomes the child of the client's span.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// Name `span` now that what names it is known (an `otel.name` recorded
/// after a span has started is not applied).
pub fn rename(span: &Span, name: String) {
    if !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

/// The trace `span` belongs to, as 32 hex digits; `None` when it is not
/// traced.
pub fn trace_id(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// The trace of the span in which this runs, for a log line's `trace_id`.
pub fn current_trace_id() -> Option<String> {
    trace_id(&Span::current())
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// What a statement's span says of it: its operation and its first table,
/// read from its first words (`SELECT … FROM pets`, `INSERT INTO orders`,
/// `UPDATE pets`, `DELETE FROM pet_tags`). Never a value.
pub fn statement_summary(sql: &str) -> (String, Option<String>) {
    let mut words = sql.split(|c: char| c.is_whitespace() || c == '(' || c == ',').filter(|w| !w.is_empty());
    let operation = words.next().unwrap_or("").to_ascii_uppercase();
    let mut previous = operation.clone();
    for word in words {
        if matches!(previous.as_str(), "FROM" | "INTO" | "UPDATE" | "JOIN") && !word.eq_ignore_ascii_case("select") {
            let table: String = word.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect();
            if !table.is_empty() {
                return (operation, Some(table));
            }
        }
        previous = word.to_ascii_uppercase();
    }
    (operation, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_summed_up_by_its_operation_and_table_without_values() {
        let cases = [
            ("SELECT id, name FROM pets WHERE id = $1", ("SELECT", Some("pets"))),
            ("insert into orders (pet_id) values ($1) returning id", ("INSERT", Some("orders"))),
            ("UPDATE pets SET status = 'sold' WHERE id = 3", ("UPDATE", Some("pets"))),
            ("DELETE FROM pet_tags WHERE pet_id = $1", ("DELETE", Some("pet_tags"))),
            ("SELECT COUNT(*) FROM(SELECT 1 FROM pets)", ("SELECT", Some("pets"))),
            ("SELECT 1", ("SELECT", None)),
        ];
        for (sql, (operation, table)) in cases {
            assert_eq!(statement_summary(sql), (operation.to_string(), table.map(str::to_string)), "{sql}");
        }
    }
}
