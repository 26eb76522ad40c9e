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
