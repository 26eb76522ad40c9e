//! OpenTelemetry traces, received by an OTLP/HTTP collector the test runs:
//! a request continues its client's trace (W3C `traceparent`) or starts one,
//! and its spans nest edge → component → statements, naming the statements'
//! operation and table, never their values.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{Server, eventually};

/// An OTLP/HTTP collector on a free port: every span of every export it is
/// sent (JSON encoding), flattened.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        async fn receive(State(spans): State<Arc<Mutex<Vec<Value>>>>, body: axum::body::Bytes) -> &'static str {
            let export: Value = serde_json::from_slice(&body).expect("an OTLP/JSON export");
            let mut kept = spans.lock().unwrap();
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                let service = resource["resource"]["attributes"].clone();
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service"] = service.clone();
                        kept.push(span);
                    }
                }
            }
            "{}"
        }
        let app = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    fn server(&self) -> Server {
        Server::builder()
            .with_misbehave()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.url)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_BSP_SCHEDULE_DELAY", "50")
            .start()
    }

    /// The spans of `trace`, once the one named `root` has arrived.
    async fn trace(&self, trace: &str, root: &str) -> Vec<Value> {
        eventually("the request's spans reaching the collector", Duration::from_secs(20), || async {
            let all = self.spans.lock().unwrap();
            let mine: Vec<Value> = all.iter().filter(|s| s["traceId"] == trace).cloned().collect();
            mine.iter().any(|s| s["name"] == root).then_some(mine)
        })
        .await
    }
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let attributes = span["attributes"].as_array()?;
    let found = attributes.iter().find(|a| a["key"] == key)?;
    found["value"].as_object()?.values().next()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test]
async fn a_request_continues_its_clients_trace_edge_to_component_to_statements() {
    let collector = Collector::start().await;
    let s = collector.server();
    let id = s.create_pet(&json!({"name": "Secret Rex", "species": "dog"})).await;

    let (trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let resp = reqwest::Client::new()
        .get(s.url(&format!("/api/v1/pets/{id}")))
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);

    let spans = collector.trace(trace, "GET /api/v1/pets").await;
    let [edge] = named(&spans, "GET /api/v1/pets")[..] else { panic!("one edge span: {spans:#?}") };
    assert_eq!(edge["parentSpanId"], client_span, "the edge's span is the client's span's child");
    assert_eq!(edge["kind"], 2, "a server span");
    assert_eq!(attribute(edge, "http.route"), Some(&json!("/api/v1/pets")));
    assert_eq!(attribute(edge, "http.response.status_code"), Some(&json!("200")), "OTLP/JSON writes 64-bit integers as strings");

    let [component] = named(&spans, "component pets")[..] else { panic!("one component span: {spans:#?}") };
    assert_eq!(component["parentSpanId"], edge["spanId"], "the component call is the edge's child");
    assert_eq!(attribute(component, "petstore.component"), Some(&json!("pets")));
    let digest = attribute(component, "petstore.component.digest").and_then(Value::as_str).expect("digest");
    assert_eq!(digest.len(), 64, "a sha256 digest: {digest}");

    let statements: Vec<&Value> = spans.iter().filter(|s| s["parentSpanId"] == component["spanId"]).collect();
    let select = statements.iter().find(|s| s["name"] == "SELECT pets").expect("the SELECT of the pet");
    assert_eq!(attribute(select, "db.operation.name"), Some(&json!("SELECT")));
    assert_eq!(attribute(select, "db.collection.name"), Some(&json!("pets")));
    // Names and shapes only: no value the client sent or the rows hold.
    let text = serde_json::to_string(&spans).expect("JSON");
    assert!(!text.contains("Secret Rex"), "a stored value in a span");
    assert!(!text.contains(&format!("= {id}")), "a parameter in a span");
    let service = spans[0]["service"].as_array().expect("resource attributes");
    assert!(service.iter().any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "petstore"));

    // The request's log line names the trace.
    let line = eventually("the access log line", Duration::from_secs(5), || async {
        s.logs().into_iter().find(|l| l["message"] == "request" && l["path"] == format!("/api/v1/pets/{id}"))
    })
    .await;
    assert_eq!(line["trace_id"], trace);
}

#[tokio::test]
async fn a_request_without_a_traceparent_starts_a_trace_and_a_failed_one_is_marked_in_spans_and_logs() {
    let collector = Collector::start().await;
    let s = collector.server();
    let before = s.create_pet(&json!({"name": "Kept", "species": "cat"})).await;
    let resp = s.get("/api/v1/pets/999999").await;
    assert_eq!(resp.status, 404);
    let line = eventually("the access log line", Duration::from_secs(5), || async {
        s.logs().into_iter().find(|l| l["message"] == "request" && l["path"] == "/api/v1/pets/999999")
    })
    .await;
    let trace = line["trace_id"].as_str().expect("a trace id in the log line").to_string();
    assert_eq!(trace.len(), 32);
    assert_eq!(resp.body["error"]["trace_id"], trace.as_str(), "the error body names the trace: {}", resp.body);
    let spans = collector.trace(&trace, "GET /api/v1/pets").await;
    let [edge] = named(&spans, "GET /api/v1/pets")[..] else { panic!("one edge span: {spans:#?}") };
    assert!(edge.get("parentSpanId").is_none_or(|p| p == ""), "a root span: {edge}");
    assert_eq!(attribute(edge, "http.response.status_code"), Some(&json!("404")));
    assert_eq!(s.get(&format!("/api/v1/pets/{before}")).await.status, 200, "what was written is still there");

    // A request that fails: its edge span is an error, and the warning the
    // host logs about it names its trace as the access line does.
    let trapped = s.get("/api/v1/misbehave/trap").await;
    trapped.assert_error(500, "component_failed");
    let (access, warning) = eventually("the lines of the trapped request", Duration::from_secs(5), || async {
        let logs = s.logs();
        let access = logs.iter().find(|l| l["message"] == "request" && l["path"] == "/api/v1/misbehave/trap")?;
        let warning = logs.iter().find(|l| l["message"] == "component did not answer")?;
        Some((access.clone(), warning.clone()))
    })
    .await;
    let trace = access["trace_id"].as_str().expect("trace id").to_string();
    assert_eq!(warning["trace_id"], trace.as_str());
    assert_eq!(trapped.body["error"]["trace_id"], trace.as_str(), "a host-made error body too");
    let spans = collector.trace(&trace, "GET /api/v1/misbehave").await;
    let [edge] = named(&spans, "GET /api/v1/misbehave")[..] else { panic!("one edge span: {spans:#?}") };
    assert_eq!(edge["status"]["code"], 2, "STATUS_CODE_ERROR: {edge}");
}
