//! Slow and idle clients cannot pin the server: a header that does not
//! arrive in time, a body that does not arrive in time and a connection
//! left idle are each closed at their bound, normal clients are served
//! meanwhile, and at the connection cap a new client takes the slot of an
//! idle connection, or waits for a slow one's deadline, instead of being
//! refused.

use std::time::{Duration, Instant};

use futures::future::join_all;
use crate::support::{Server, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_MS: u64 = 1500;
const BODY_MS: u64 = 1500;
const KEEPALIVE_MS: u64 = 2500;
/// Scheduling slack allowed past a deadline.
const SLACK: Duration = Duration::from_millis(1500);

fn server(max_connections: u32) -> Server {
    Server::builder()
        .env("HEADER_TIMEOUT_MS", &HEADER_MS.to_string())
        .env("BODY_TIMEOUT_MS", &BODY_MS.to_string())
        .env("KEEPALIVE_TIMEOUT_MS", &KEEPALIVE_MS.to_string())
        .env("MAX_CONNECTIONS", &max_connections.to_string())
        .start()
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect")
}

/// A connection that made one request, got its answer, and is now idle
/// on keep-alive.
async fn idle_connection(s: &Server) -> TcpStream {
    let mut stream = connect(s).await;
    stream.write_all(b"GET /api/v1/health/live HTTP/1.1\r\nHost: idle\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    stream
}

/// Read until the server closes the connection; returns what it sent and
/// when it closed.
async fn until_closed(mut stream: TcpStream) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&received).into_owned(), Instant::now()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn open_connections(s: &Server) -> f64 {
    s.metrics().await.get("petstore_http_connections_open{listener=\"public\"}").copied().unwrap_or(0.0)
}

/// Wait (polling the metric) until the server holds `n` public connections.
async fn wait_for_open(s: &Server, n: usize) {
    let what = format!("the server holding {n} connections");
    eventually(&what, Duration::from_secs(20), || async { (open_connections(s).await >= n as f64).then_some(()) }).await;
}

/// One request on a new connection; its status and latency.
async fn timed_get(s: &Server, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = reqwest::Client::new().get(s.url(path)).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
    (status, started.elapsed())
}

/// Connections the server closed, by reason.
async fn closed_for(s: &Server) -> impl Fn(&str) -> f64 {
    let metrics = s.metrics().await;
    move |reason: &str| {
        metrics
            .get(&format!("petstore_http_connections_closed_total{{listener=\"public\",reason=\"{reason}\"}}"))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Each connection is closed, unanswered, `bound_ms` after it started.
async fn all_closed_at(what: &str, connections: Vec<(TcpStream, Instant)>, bound_ms: u64) {
    let closed = join_all(connections.into_iter().map(|(stream, started)| async move {
        let (answer, closed) = until_closed(stream).await;
        (answer, closed - started)
    }))
    .await;
    for (answer, took) in &closed {
        assert!(answer.is_empty(), "{what} got an answer: {answer}");
        assert_took(what, *took, bound_ms);
    }
    let worst = closed.iter().map(|(_, took)| *took).max().unwrap_or_default();
    println!("{} × {what}: all closed within {worst:?} (bound {bound_ms} ms)", closed.len());
}

fn assert_closed_at(what: &str, started: Instant, closed: Instant, bound_ms: u64) {
    assert_took(what, closed - started, bound_ms);
}

fn assert_took(what: &str, took: Duration, bound_ms: u64) {
    let bound = Duration::from_millis(bound_ms);
    assert!(took >= bound - Duration::from_millis(100), "{what} closed early, after {took:?}");
    assert!(took <= bound + SLACK, "{what} still open {took:?} after it started (bound {bound:?})");
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_while_normal_clients_are_served() {
    const EACH: usize = 150;
    let s = server(1024);
    let pet = s.create_pet(&serde_json::json!({"name": "Rex", "species": "dog"})).await;

    // Half a header each, then nothing.
    let mut half_sent = Vec::new();
    for _ in 0..EACH {
        let mut stream = connect(&s).await;
        stream.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: slow\r\nX-Slow: ").await.expect("write");
        half_sent.push((stream, Instant::now()));
    }
    // One request each, answered, then idle on keep-alive.
    let mut idle = Vec::new();
    for _ in 0..EACH {
        idle.push((idle_connection(&s).await, Instant::now()));
    }
    wait_for_open(&s, 2 * EACH).await;

    // Normal clients meanwhile: served, and quickly.
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let (status, took) = timed_get(&s, &format!("/api/v1/pets/{pet}")).await;
        assert_eq!(status, 200);
        latencies.push(took);
    }
    latencies.sort();
    let (p50, max) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    println!("holding {} slow connections: normal requests p50 {p50:?}, max {max:?}", 2 * EACH);
    assert!(max < Duration::from_secs(1), "a normal request waited {max:?} behind slow clients");

    futures::join!(
        all_closed_at("a half-sent header", half_sent, HEADER_MS),
        all_closed_at("an idle keep-alive connection", idle, KEEPALIVE_MS)
    );

    let closed = closed_for(&s).await;
    assert!(closed("header_timeout") >= EACH as f64 && closed("idle_timeout") >= EACH as f64);
    assert_eq!(s.get(&format!("/api/v1/pets/{pet}")).await.body["name"], "Rex", "nothing was lost");
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_deadline() {
    let s = server(1024);
    let started = Instant::now();
    let (answer, closed) = until_closed(connect(&s).await).await;
    assert!(answer.is_empty());
    assert_closed_at("a silent connection", started, closed, HEADER_MS);
}

/// A keep-alive connection whose next request stalls mid-header is closed
/// at that header's deadline, long before its idle deadline would have come:
/// the stall starts after the connection's deadline check has already run
/// once while it was idle.
#[tokio::test]
async fn a_stalled_second_request_is_closed_at_its_own_header_deadline() {
    const LONG_KEEPALIVE_MS: u64 = 20_000;
    let s = Server::builder()
        .env("HEADER_TIMEOUT_MS", &HEADER_MS.to_string())
        .env("KEEPALIVE_TIMEOUT_MS", &LONG_KEEPALIVE_MS.to_string())
        .start();
    let pet = s.create_pet(&serde_json::json!({"name": "Rex", "species": "dog"})).await;
    let mut stream = idle_connection(&s).await;
    // Idle for longer than the header timeout: past the connection's first check.
    tokio::time::sleep(Duration::from_millis(HEADER_MS + 300)).await;
    stream.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: slow\r\nX-Slow: ").await.expect("write");
    let started = Instant::now();
    let (answer, closed) = until_closed(stream).await;
    assert!(answer.is_empty(), "the stalled request got an answer: {answer}");
    assert_closed_at("a stalled second request", started, closed, HEADER_MS);
    assert!((closed_for(&s).await)("header_timeout") >= 1.0);
    assert_eq!(s.get(&format!("/api/v1/pets/{pet}")).await.body["name"], "Rex", "nothing was lost");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_writes_nothing() {
    let s = server(1024);
    let kept = s.create_pet(&serde_json::json!({"name": "Kept", "species": "dog"})).await;
    let mut stream = connect(&s).await;
    let started = Instant::now();
    stream
        .write_all(b"POST /api/v1/pets HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
        .await
        .expect("write");
    let (answer, closed) = until_closed(stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert_closed_at("a slow body", started, closed, BODY_MS);
    let pets = s.get("/api/v1/pets").await.body;
    assert_eq!(pets["total"], 1, "{pets}");
    assert_eq!(pets["items"][0]["id"], kept);
}

/// Connections a server at its cap holds in the tests below.
const CAP: usize = 20;

/// A server holding `CAP` connections, silent ones or idle keep-alive ones,
/// and how long a new client then waited for its answer (a 200).
async fn new_client_at_the_cap(idle: bool) -> (Server, Vec<TcpStream>, Duration) {
    let s = server(CAP as u32);
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(if idle { idle_connection(&s).await } else { connect(&s).await });
    }
    wait_for_open(&s, CAP).await;
    let (status, took) = timed_get(&s, "/api/v1/health/live").await;
    assert_eq!(status, 200);
    let held_by = if idle { "idle keep-alive connections" } else { "silent clients" };
    println!("at the cap of {CAP} {held_by}: a new client was served after {took:?}");
    (s, held, took)
}

#[tokio::test]
async fn at_the_cap_a_new_client_waits_only_for_a_slow_clients_deadline() {
    // Every slot is taken by a client that sends nothing: a new one is not
    // refused, it is served once their header deadline has closed them.
    let (s, _held, took) = new_client_at_the_cap(false).await;
    assert!(took >= Duration::from_millis(HEADER_MS / 2), "served after {took:?}: it did not wait for a slot");
    assert!(took <= Duration::from_millis(HEADER_MS) + SLACK, "waited {took:?}");
    let metrics = s.metrics().await;
    assert!(metrics.get("petstore_http_connection_cap_reached_total{listener=\"public\"}").is_some_and(|n| *n >= 1.0));
}

#[tokio::test]
async fn at_the_cap_a_new_client_takes_the_slot_of_the_longest_idle_connection() {
    // Keep-alive connections between requests: a new client is served at
    // once, in the place of the one idle the longest.
    let (s, mut idle, took) = new_client_at_the_cap(true).await;
    assert!(took < Duration::from_millis(KEEPALIVE_MS / 2), "waited {took:?} for an idle connection's slot");
    let longest_idle = tokio::time::timeout(Duration::from_millis(KEEPALIVE_MS / 2), until_closed(idle.remove(0)));
    let (answer, _) = longest_idle.await.expect("the connection idle the longest was closed to make room");
    assert!(answer.is_empty(), "{answer}");
    assert!(closed_for(&s).await("reclaimed") >= 1.0);
}
