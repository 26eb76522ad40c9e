//! `/metrics` on the metrics port moves by exactly what was sent.

use std::collections::HashMap;

use serde_json::json;
use crate::support::Server;

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_and_histograms_move_by_exactly_what_was_sent() {
    let s = Server::builder().with_misbehave().env("REQUEST_TIMEOUT_MS", "300").start();
    let before = s.metrics().await;

    for _ in 0..3 {
        assert_eq!(s.get("/api/v1/pets").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(s.get("/api/v1/pets/999").await.status, 404);
    }
    assert_eq!(s.post("/api/v1/pets", &json!({"name": "M", "species": "dog"})).await.status, 201);
    assert_eq!(s.get("/api/v1/misbehave/trap").await.status, 500);
    assert_eq!(s.get("/api/v1/misbehave/loop").await.status, 504);
    assert_eq!(s.get("/nowhere").await.status, 404);
    assert_eq!(s.get("/api/v1/health/live").await.status, 200);

    let after = s.metrics().await;
    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d(r#"petstore_http_requests_total{method="GET",route="/api/v1/pets",status="200"}"#), 3.0);
    assert_eq!(d(r#"petstore_http_requests_total{method="GET",route="/api/v1/pets",status="404"}"#), 2.0);
    assert_eq!(d(r#"petstore_http_requests_total{method="POST",route="/api/v1/pets",status="201"}"#), 1.0);
    assert_eq!(d(r#"petstore_http_requests_total{method="GET",route="/api/v1/misbehave",status="500"}"#), 1.0);
    assert_eq!(d(r#"petstore_http_requests_total{method="GET",route="/api/v1/misbehave",status="504"}"#), 1.0);
    assert_eq!(d(r#"petstore_http_requests_total{method="GET",route="unmatched",status="404"}"#), 1.0);
    assert_eq!(d(r#"petstore_http_requests_total{method="GET",route="/api/v1/health/live",status="200"}"#), 1.0);
    // Errors are the 5xx answers, and only those.
    assert_eq!(d(r#"petstore_http_request_errors_total{method="GET",route="/api/v1/misbehave",status="500"}"#), 1.0);
    assert_eq!(d(r#"petstore_http_request_errors_total{method="GET",route="/api/v1/misbehave",status="504"}"#), 1.0);
    assert_eq!(d(r#"petstore_http_request_errors_total{method="GET",route="/api/v1/pets",status="404"}"#), 0.0);
    // Latency: one observation per request; the 0.5 s bucket boundary exists.
    assert_eq!(d(r#"petstore_http_request_duration_seconds_count{method="GET",route="/api/v1/pets"}"#), 5.0);
    assert!(
        after.contains_key(
            r#"petstore_http_request_duration_seconds_bucket{method="GET",route="/api/v1/pets",le="0.5"}"#
        )
    );
    // Components: instantiations, traps, timeouts.
    assert_eq!(d(r#"petstore_component_instantiation_seconds_count{component="pets"}"#), 6.0);
    assert_eq!(d(r#"petstore_component_traps_total{component="misbehave"}"#), 1.0);
    assert_eq!(d(r#"petstore_component_timeouts_total{component="misbehave"}"#), 1.0);
    // Database: the POST was one statement (an INSERT … RETURNING), in no
    // transaction.
    assert_eq!(d(r#"petstore_db_query_duration_seconds_count{operation="begin"}"#), 0.0);
    assert_eq!(d(r#"petstore_db_query_duration_seconds_count{operation="commit"}"#), 0.0);
    assert!(d(r#"petstore_db_query_duration_seconds_count{operation="query"}"#) >= 1.0);
    assert!(after.contains_key(r#"petstore_db_pool_connections{state="idle"}"#));
    // Process metrics from the prometheus crate's collector.
    assert!(after["process_resident_memory_bytes"] > 0.0);
    assert!(after.contains_key("process_cpu_seconds_total"));
}
