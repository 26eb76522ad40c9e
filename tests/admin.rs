//! The admin API before any body: the token is checked on the headers, so
//! an unauthenticated upload costs nothing (its body is never read); a body
//! must arrive within BODY_TIMEOUT_MS; an address that keeps presenting
//! wrong tokens is slowed to one try a second (and the right token still
//! gets in); and `/metrics` lives on a port of its own, so what may scrape
//! it never reaches the admin API.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Answer, Server, eventually, routed_components, test_component};

const TOKEN: &str = "admin-token";

fn server(extra: &[(&str, &str)]) -> Server {
    Server::builder().env("ADMIN_TOKEN", TOKEN).envs(extra).start()
}

/// The admin port's answer to `head` (a request's header) followed by
/// `body`, sent in one go or not at all; the status line and headers.
fn raw(s: &Server, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", s.admin_port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(head.as_bytes()).expect("head");
    // The server may answer and close before the body is through.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).lines().take_while(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

fn rss_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).expect("status");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok()).expect("VmRSS")
}

fn upload_head(token: &str, length: usize) -> String {
    format!(
        "PUT /admin/components/pets HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn the_token_is_checked_before_a_byte_of_the_body_is_read() {
    let s = server(&[]);
    // Only the header is sent: the 401 comes at once, and closes.
    let started = Instant::now();
    let answer = raw(&s, &upload_head("wrong", 31 << 20), b"");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());

    // Three 31 MiB uploads with a wrong token leave the memory as it was.
    let before = rss_kib(&s);
    let body = vec![b'x'; 31 << 20];
    for _ in 0..3 {
        assert!(raw(&s, &upload_head("wrong", body.len()), &body).starts_with("HTTP/1.1 401"));
    }
    let grew = rss_kib(&s).saturating_sub(before);
    assert!(grew < 8 * 1024, "RSS grew by {grew} KiB for three refused uploads");
    assert_eq!(s.get("/api/v1/pets").await.status, 200);
}

#[tokio::test]
async fn an_upload_whose_body_does_not_arrive_in_time_is_a_408_and_changes_nothing() {
    let s = server(&[("BODY_TIMEOUT_MS", "500")]);
    let pet = s.create_pet(&json!({"name": "Kept", "species": "cat"})).await;
    let registry_before = registry(&s).await;
    let started = Instant::now();
    let answer = raw(&s, &upload_head(TOKEN, 100_000), b"only the start of it");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(registry(&s).await, registry_before);
    assert_eq!(s.get(&format!("/api/v1/pets/{pet}")).await.body["name"], "Kept");
}

/// Each component's stored versions and the one it should run: what an
/// upload changes (heartbeats and load times move on their own).
async fn registry(s: &Server) -> Vec<(Value, Value, Value)> {
    let list = s.admin_components(TOKEN).await;
    let components = list["components"].as_array().cloned().unwrap_or_default();
    components.iter().map(|c| (c["name"].clone(), c["desired"].clone(), c["versions"].clone())).collect()
}

/// `GET /admin/components` from `from` with `token`.
async fn list_from(s: &Server, from: &str, token: &str) -> Answer {
    let client = reqwest::Client::builder().local_address(from.parse::<IpAddr>().ok()).build().expect("client");
    let req = client.get(s.admin_url("/admin/components")).bearer_auth(token).header("connection", "close");
    Answer::read(req.send().await.expect("GET")).await
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_slowed_one_call_at_a_time_and_the_right_token_still_gets_in() {
    let s = server(&[]);
    for _ in 0..5 {
        list_from(&s, "127.0.0.1", "wrong").await.assert_error(401, "unauthorized");
    }
    // Slowed: each call waits a second before its token is checked, and
    // another one meanwhile is refused.
    let started = Instant::now();
    let (slowed, meanwhile) = tokio::join!(list_from(&s, "127.0.0.1", "wrong"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        list_from(&s, "127.0.0.1", TOKEN).await
    });
    slowed.assert_error(401, "unauthorized");
    assert!(started.elapsed() >= Duration::from_secs(1), "checked after {:?}", started.elapsed());
    meanwhile.assert_error(429, "too_many_requests");
    assert!(meanwhile.header("retry-after").is_some());
    // The right token gets in, a second later.
    let started = Instant::now();
    assert_eq!(list_from(&s, "127.0.0.1", TOKEN).await.status, 200);
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Another address is not held back by this one's failures.
    let started = Instant::now();
    assert_eq!(list_from(&s, "127.0.0.2", TOKEN).await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    let failures = s.metrics().await.get("petstore_admin_auth_failures_total").copied();
    assert_eq!(failures, Some(7.0), "5 wrong, 1 slowed and wrong, 1 refused meanwhile");
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_only_there() {
    let s = server(&[]);
    let scrape = reqwest::get(s.metrics_url("/metrics")).await.expect("scrape");
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await.expect("text").contains("petstore_http_requests_total"));
    let on_admin = reqwest::get(s.admin_url("/metrics")).await.expect("admin");
    assert_eq!(on_admin.status(), 404, "the admin port serves no metrics");
    let client = reqwest::Client::new();
    let admin_on_metrics = client.get(s.metrics_url("/admin/components")).bearer_auth(TOKEN).send().await.expect("GET");
    assert_eq!(admin_on_metrics.status(), 404, "the metrics port serves no admin API");
}

#[tokio::test]
async fn per_component_series_exist_at_zero_before_their_first_event() {
    let s = server(&[]);
    let before = s.metrics().await;
    let components = routed_components();
    assert!(components.len() >= 2, "{components:?}");
    for component in &components {
        for series in [
            format!("petstore_component_traps_total{{component=\"{component}\"}}"),
            format!("petstore_component_timeouts_total{{component=\"{component}\"}}"),
            format!("petstore_component_swaps_total{{component=\"{component}\",result=\"rejected\"}}"),
            format!("petstore_db_statements_refused_total{{component=\"{component}\"}}"),
        ] {
            assert_eq!(before.get(&series), Some(&0.0), "{series} at start");
        }
    }
    // A series counts from that zero: a refused upload makes it 1.
    let rex = s.create_pet(&json!({"name": "Rex", "species": "dog"})).await;
    let client = reqwest::Client::new();
    let refused =
        client.put(s.admin_url("/admin/components/pets")).bearer_auth(TOKEN).body(b"not wasm".to_vec()).send().await;
    assert_eq!(refused.expect("PUT").status(), 422);
    let after = s.metrics().await;
    assert_eq!(after.get("petstore_component_swaps_total{component=\"pets\",result=\"rejected\"}"), Some(&1.0));
    for other in components.iter().filter(|c| *c != "pets") {
        let series = format!("petstore_component_swaps_total{{component=\"{other}\",result=\"rejected\"}}");
        assert_eq!(after.get(&series), Some(&0.0), "{series}");
    }
    let kept = s.get(&format!("/api/v1/pets/{rex}")).await;
    assert_eq!((kept.status, &kept.body["name"]), (200, &json!("Rex")), "pets keeps serving what it had");
}

#[tokio::test]
async fn a_swapped_in_versions_series_exist_at_zero_before_its_first_request() {
    let s = Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("ADMIN_TOKEN", TOKEN)
        .start();
    assert_eq!(s.get("/api/v1/versioned").await.body["version"], "version-a");
    let put = s.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let hex = put.body["digest"].as_str().expect("digest").trim_start_matches("sha256:").to_string();
    // The new version's series, by name (whatever form the digest label takes).
    let series = async |name: &str| {
        let metrics = s.metrics().await;
        let found = metrics.into_iter().find(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(&hex));
        found.map(|(_, value)| value)
    };
    eventually("the new version served", Duration::from_secs(10), || async {
        (series("petstore_component_info").await == Some(1.0)).then_some(())
    })
    .await;
    for name in [
        "petstore_component_version_requests_total",
        "petstore_component_version_errors_total",
        "petstore_component_version_duration_seconds_count",
    ] {
        assert_eq!(series(name).await, Some(0.0), "{name} of the new version, before its first request");
    }
    let ok = s.metrics().await.get("petstore_component_swaps_total{component=\"versioned\",result=\"ok\"}").copied();
    assert_eq!(ok, Some(1.0), "the swap counted");
    // Its first request counts from that zero.
    assert_eq!(s.get("/api/v1/versioned").await.body["version"], "version-b");
    assert_eq!(series("petstore_component_version_requests_total").await, Some(1.0));
    assert_eq!(series("petstore_component_version_errors_total").await, Some(0.0));
    assert_eq!(series("petstore_component_version_duration_seconds_count").await, Some(1.0));
    // This replica says it reached the active version, and only that.
    let states = s.metrics().await;
    for (state, value) in [("converged", 1.0), ("loading", 0.0), ("failed", 0.0)] {
        let series = format!("petstore_fleet_replica_state{{component=\"versioned\",state=\"{state}\"}}");
        assert_eq!(states.get(&series), Some(&value), "{series}");
    }
}
