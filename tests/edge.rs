//! What the host answers itself: health, CORS, request ids, the API version
//! header, the body limit, the content-type rule, unknown paths, the OpenAPI
//! document and the request log.

use serde_json::{Value, json};
use std::time::Duration;

use crate::support::{Answer, Server, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn health_endpoints_report_checks() {
    let s = Server::builder().env("API_VERSION", "2.3.4").env("ENVIRONMENT", "staging").start();
    let h = s.get("/api/v1/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(
        h.body,
        json!({"status": "ok", "version": "2.3.4", "environment": "staging", "checks": {"database": "ok", "components": "ok"}})
    );
    assert_eq!(s.get("/api/v1/health/live").await.status, 200);
    let r = s.get("/api/v1/health/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.header("x-api-version"), Some("2.3.4"));
    let post = s.post("/api/v1/health", &json!({})).await;
    post.assert_error(405, "method_not_allowed");
    assert!(post.header("allow").is_some());
}

#[tokio::test]
async fn every_answer_carries_version_and_request_id() {
    let s = Server::start();
    for a in [s.get("/api/v1/pets").await, s.get("/nope").await, s.get("/api/v1/health/live").await] {
        assert_eq!(a.header("x-api-version"), Some("1.0.0"));
        assert!(a.header("x-request-id").is_some_and(|id| !id.is_empty()));
    }
}

#[tokio::test]
async fn a_valid_request_id_is_echoed_and_logged() {
    let s = Server::start();
    let id = "trace-abc_123.XYZ~!";
    let a = Answer::read(s.client.get(s.url("/api/v1/pets")).header("x-request-id", id).send().await.unwrap()).await;
    assert_eq!(a.header("x-request-id"), Some(id));
    let long = "x".repeat(128);
    let b = Answer::read(s.client.get(s.url("/api/v1/pets")).header("x-request-id", &long).send().await.unwrap()).await;
    assert_eq!(b.header("x-request-id"), Some(long.as_str()));

    // The access log line of that request carries the id, route, status and component.
    let line = eventually("the access log line of the request", Duration::from_secs(5), || async {
        s.logs().into_iter().find(|l| l["request_id"] == id && l["message"] == "request")
    })
    .await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/api/v1/pets");
    assert_eq!(line["component"], "pets");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].is_number());
}

#[tokio::test]
async fn every_error_body_names_its_request_and_other_bodies_are_untouched() {
    let s = Server::start();
    let kept = s.create_pet(&json!({"name": "Kept", "species": "cat"})).await;
    // A component's error (404, 422), the host's (no route, 405), and one
    // the edge refuses before any handler (a body too large).
    let errors = [
        s.get("/api/v1/pets/999999").await,
        s.post("/api/v1/pets", &json!({"name": ""})).await,
        s.get("/nope").await,
        s.post("/api/v1/health", &json!({})).await,
        Answer::read(
            s.client.post(s.url("/api/v1/pets")).header("content-type", "application/json")
                .body(padded_body(65_537)).send().await.unwrap(),
        )
        .await,
    ];
    for a in errors {
        let id = a.header("x-request-id").expect("a request id").to_string();
        assert_eq!(a.body["error"]["request_id"], id.as_str(), "{} {}", a.status, a.body);
        assert!(a.body["error"]["code"].is_string() && a.body["error"]["message"].is_string(), "{}", a.body);
        assert!(a.body["error"].get("trace_id").is_none(), "no trace without OpenTelemetry: {}", a.body);
    }
    let invalid = s.post("/api/v1/pets", &json!({"name": ""})).await;
    assert!(invalid.body["error"]["details"].is_array(), "a 422 keeps its details: {}", invalid.body);
    let ok = s.get(&format!("/api/v1/pets/{kept}")).await;
    assert_eq!(ok.status, 200, "what was written before is still there");
    assert!(ok.body.get("error").is_none() && ok.body.get("request_id").is_none(), "{}", ok.body);
}

#[tokio::test]
async fn an_error_answer_too_large_to_be_the_hosts_leaves_as_the_component_made_it() {
    let s = Server::builder().with_misbehave().start();
    let a = s.get("/api/v1/misbehave/large-error").await;
    assert_eq!(a.status, 422, "the component's answer, not a 500");
    assert_eq!(a.body["error"]["message"].as_str().map(str::len), Some(70_000), "{}", &a.text[..200]);
    assert!(a.body["error"].get("request_id").is_none(), "not rewritten");
    assert!(a.header("x-request-id").is_some(), "the header still names the request");
}

#[tokio::test]
async fn an_invalid_request_id_is_replaced() {
    let s = Server::start();
    for bad in ["x".repeat(129), "has space".to_string(), "tab\there".to_string()] {
        let a =
            Answer::read(s.client.get(s.url("/api/v1/pets")).header("x-request-id", &bad).send().await.unwrap()).await;
        assert_eq!(a.status, 200, "the request proceeds");
        let id = a.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(!id.is_empty());
    }
}

#[tokio::test]
async fn cors_allows_listed_origins_only() {
    let s = Server::builder().env("CORS_ORIGINS", "https://shop.example, http://localhost:3000").start();
    let allowed = Answer::read(
        s.client.get(s.url("/api/v1/pets")).header("origin", "https://shop.example").send().await.unwrap(),
    )
    .await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://shop.example"));
    assert!(
        allowed.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
    );

    let refused = Answer::read(
        s.client.get(s.url("/api/v1/pets")).header("origin", "https://evil.example").send().await.unwrap(),
    )
    .await;
    assert_eq!(refused.status, 200);
    assert!(refused.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", refused.headers);
}

#[tokio::test]
async fn preflight_is_204_for_allowed_origins_and_bare_for_others() {
    let s = Server::builder().env("CORS_ORIGINS", "https://shop.example").start();
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/api/v1/pets"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = Answer::read(preflight("https://shop.example").await.unwrap()).await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://shop.example"));
    assert!(ok.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(ok.header("access-control-allow-headers").unwrap().contains("content-type"));

    let other = Answer::read(preflight("https://evil.example").await.unwrap()).await;
    assert!(other.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", other.headers);
}

#[tokio::test]
async fn paths_outside_the_api_and_unknown_routes_are_404_json() {
    let s = Server::start();
    for path in ["/", "/index.html", "/api", "/api/v1", "/api/v1/", "/api/v2/pets", "/api/v1/unknown", "/api/v1/petsx"]
    {
        s.get(path).await.assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn writes_need_a_json_content_type() {
    let s = Server::start();
    let keep = s.create_pet(&json!({"name": "Keep", "species": "dog"})).await;
    let send = |method: reqwest::Method, path: String, ct: Option<&'static str>| {
        let mut r = s.client.request(method, s.url(&path)).body(r#"{"name":"x","species":"y"}"#);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    for (method, ct) in [
        (reqwest::Method::POST, None),
        (reqwest::Method::POST, Some("text/plain")),
        (reqwest::Method::POST, Some("application/merge-patch+json")),
        (reqwest::Method::PUT, Some("application/x-www-form-urlencoded")),
        (reqwest::Method::PATCH, Some("text/json")),
    ] {
        let path =
            if method == reqwest::Method::POST { "/api/v1/pets".to_string() } else { format!("/api/v1/pets/{keep}") };
        Answer::read(send(method.clone(), path, ct).await.unwrap()).await.assert_error(415, "unsupported_media_type");
    }
    let with_charset = Answer::read(
        send(reqwest::Method::POST, "/api/v1/pets".into(), Some("application/json; charset=utf-8")).await.unwrap(),
    )
    .await;
    assert_eq!(with_charset.status, 201);
    assert_eq!(s.get(&format!("/api/v1/pets/{keep}")).await.body["name"], "Keep");
}

/// A pet body padded with spaces to exactly `size` bytes.
fn padded_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"name":"Big","species":"dog"}"#.to_vec();
    body.resize(size, b' ');
    body
}

#[tokio::test]
async fn the_body_limit_is_64_kib_exactly() {
    let s = Server::start();
    let post = |body: Vec<u8>| {
        s.client.post(s.url("/api/v1/pets")).header("content-type", "application/json").body(body).send()
    };
    let at_limit = Answer::read(post(padded_body(65_536)).await.unwrap()).await;
    assert_eq!(at_limit.status, 201, "65,536 bytes are accepted: {}", at_limit.text);
    let too_large = post(padded_body(65_537)).await.unwrap();
    // The unread rest of the body ends the connection: no client may reuse it.
    assert_eq!(too_large.headers()["connection"], "close");
    Answer::read(too_large).await.assert_error(413, "payload_too_large");
    assert_eq!(s.get("/api/v1/pets").await.body["total"], 1, "the refused body wrote nothing");
}

/// Send a chunked request by hand and return the status line's code.
async fn chunked_post(s: &Server, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let mut req = b"POST /api/v1/pets HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in body.chunks(10_000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer 413 and close before reading everything.
    let _ = stream.write_all(&req).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn the_body_limit_holds_for_chunked_bodies() {
    let s = Server::start();
    let (ok, text) = chunked_post(&s, &padded_body(65_536)).await;
    assert_eq!(ok, 201, "{text}");
    let (too_big, text) = chunked_post(&s, &padded_body(65_537)).await;
    assert_eq!(too_big, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert_eq!(s.get("/api/v1/pets").await.body["total"], 1);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_covers_the_contract() {
    let s =
        Server::builder().env("PAGINATION_LIMIT", "7").env("PAGINATION_MAX", "50").env("API_VERSION", "2.1.0").start();
    let a = s.get("/api/v1/openapi.json").await;
    assert_eq!(a.status, 200);
    let mut doc = a.body;
    // The served document states this deployment's settings...
    assert_eq!(doc["info"]["version"], "2.1.0");
    let limit = &doc["components"]["parameters"]["Limit"]["schema"];
    assert_eq!((limit["maximum"].as_u64(), limit["default"].as_u64()), (Some(50), Some(7)));
    s.get("/api/v1/pets?limit=51").await.assert_error(400, "invalid_parameter");
    assert_eq!(s.get("/api/v1/pets").await.body["limit"], 7);
    // ...and is otherwise the one in the repository.
    let file: Value = serde_json::from_str(include_str!("../host/openapi.json")).unwrap();
    for (served, kept) in
        [("/info/version", "/info/version"), ("/components/parameters/Limit", "/components/parameters/Limit")]
    {
        *doc.pointer_mut(served).unwrap() = file.pointer(kept).unwrap().clone();
    }
    assert_eq!(doc, file, "the served document is the one in the repository");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let routes: &[(&str, &[&str])] = &[
        ("/api/v1/health", &["get"]),
        ("/api/v1/health/live", &["get"]),
        ("/api/v1/health/ready", &["get"]),
        ("/api/v1/pets", &["get", "post"]),
        ("/api/v1/pets/{id}", &["get", "put", "patch", "delete"]),
        ("/api/v1/orders", &["get", "post"]),
        ("/api/v1/orders/{id}", &["get", "patch", "delete"]),
        ("/api/v1/store/inventory", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), routes.len(), "exactly the routes of the OpenAPI document: {:?}", paths.keys().collect::<Vec<_>>());
    for (path, methods) in routes {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    // The error codes the service answers with are all documented.
    let codes = &schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    for code in [
        "invalid_json",
        "invalid_parameter",
        "not_found",
        "method_not_allowed",
        "request_timeout",
        "conflict",
        "payload_too_large",
        "unsupported_media_type",
        "validation_failed",
        "component_failed",
        "internal",
        "unavailable",
        "timeout",
    ] {
        assert!(codes.as_array().unwrap().iter().any(|c| c == code), "error code {code} missing");
    }
}
