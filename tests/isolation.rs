//! A component that traps, loops forever or allocates without bound gets
//! its request answered 500 / 504 / 500 in bounded time; the host keeps
//! serving everyone else, and no data written before is lost. Requests share
//! no guest state unless warm-instance reuse (`INSTANCE_REUSE`) is turned
//! on, and then only within its bounds.

use std::time::{Duration, Instant};

use serde_json::json;
use crate::support::{Answer, Server};

/// A pet written before the misbehaviour…
async fn before(s: &Server) -> i64 {
    s.create_pet(&json!({"name": "Before", "species": "dog"})).await
}

/// A server, a pet written on it, and the answer to `GET /api/v1/misbehave/{what}`.
async fn misbehave(what: &str) -> (Server, i64, Answer) {
    let s = server();
    let id = before(&s).await;
    let a = s.get(&format!("/api/v1/misbehave/{what}")).await;
    (s, id, a)
}

/// …is still there as it was.
async fn still_before(s: &Server, id: i64) {
    assert_eq!(s.get(&format!("/api/v1/pets/{id}")).await.body["name"], "Before");
}

fn server() -> Server {
    Server::builder().with_misbehave().env("REQUEST_TIMEOUT_MS", "500").env("INSTANCE_MEMORY_MB", "32").start()
}

#[tokio::test]
async fn a_trap_is_a_500_and_nothing_else_is_touched() {
    let (s, id, a) = misbehave("trap").await;
    a.assert_error(500, "component_failed");
    assert!(!a.text.contains("panicked") && !a.text.contains("wasm"), "nothing internal leaks: {}", a.text);
    still_before(&s, id).await;
    assert_eq!(s.get("/api/v1/misbehave/counter").await.status, 200, "the component itself still serves");
}

#[tokio::test]
async fn an_endless_loop_times_out_with_504_while_others_are_served() {
    let s = Server::builder().with_misbehave().env("REQUEST_TIMEOUT_MS", "3000").start();
    let id = before(&s).await;
    let started = Instant::now();
    // More spinning guests than cores: they must still not starve the host.
    let loops = futures::future::join_all((0..4).map(|_| async {
        let a = s.get("/api/v1/misbehave/loop").await;
        (a, Instant::now())
    }));
    // Meanwhile, normal requests one after another: every one must be
    // answered while the guests still spin, i.e. before the first 504.
    let others = async {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(s.get(&format!("/api/v1/pets/{id}")).await.status);
        }
        (statuses, Instant::now())
    };
    let (loops, (statuses, others_done)) = tokio::join!(loops, others);
    for (a, _) in &loops {
        a.assert_error(504, "timeout");
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let first_timeout = loops.iter().map(|(_, t)| *t).min().unwrap();
    assert!(others_done < first_timeout, "normal requests waited until the spinning guests were stopped");
    assert!(started.elapsed() < Duration::from_secs(15), "timeouts took {:?}", started.elapsed());
    still_before(&s, id).await;
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_cap_with_500() {
    let s = server();
    let id = before(&s).await;
    let started = Instant::now();
    s.get("/api/v1/misbehave/alloc").await.assert_error(500, "component_failed");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // Again, to show the pool slot was given back and is reusable.
    s.get("/api/v1/misbehave/alloc").await.assert_error(500, "component_failed");
    assert_eq!(s.get(&format!("/api/v1/pets/{id}")).await.status, 200);
    assert_eq!(s.get("/api/v1/pets").await.body["total"], 1);
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let s = server();
    for _ in 0..3 {
        let a = s.get("/api/v1/misbehave/counter").await;
        assert_eq!(a.body["calls"], 1, "state leaked between requests: {}", a.text);
    }
}

#[tokio::test]
async fn many_failures_leave_the_host_healthy() {
    let s = server();
    let id = before(&s).await;
    let traps = futures::future::join_all((0..50).map(|_| s.get("/api/v1/misbehave/trap"))).await;
    assert!(traps.iter().all(|a| a.status == 500));
    assert_eq!(s.get("/api/v1/health/ready").await.status, 200);
    still_before(&s, id).await;
}

#[tokio::test]
async fn a_constraint_violation_is_a_clean_409_and_rolls_back() {
    let (s, id, a) = misbehave("constraint").await;
    a.assert_error(409, "conflict");
    for leak in ["INSERT", "pet_tags", "UNIQUE", "duplicate", "SQL"] {
        assert!(!a.text.contains(leak), "the answer reveals {leak}: {}", a.text);
    }
    let pets = s.get("/api/v1/pets").await;
    assert_eq!(pets.body["total"], 1, "the transaction's insert was rolled back");
    assert_eq!(pets.body["items"][0]["id"], id);
}

/// The misbehave component's count of calls into its instance.
async fn calls_seen(s: &Server) -> u64 {
    let a = s.get("/api/v1/misbehave/counter").await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["calls"].as_u64().expect("calls")
}

const REUSES: &str = r#"petstore_component_instance_reuses_total{component="misbehave"}"#;

#[tokio::test]
async fn by_default_no_request_sees_another_requests_guest_state() {
    let s = Server::builder().with_misbehave().start();
    for _ in 0..5 {
        assert_eq!(calls_seen(&s).await, 1, "a fresh instance per request: the guest's counter starts over");
    }
    assert_eq!(s.metrics().await.get(REUSES).copied().unwrap_or(0.0), 0.0);
}

#[tokio::test]
async fn with_reuse_an_instance_serves_at_most_n_requests() {
    let s = Server::builder().with_misbehave().env("INSTANCE_REUSE", "3").start();
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(calls_seen(&s).await);
    }
    // One request at a time: the one warm instance serves three, then a fresh one takes over.
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(s.metrics().await[REUSES], 4.0);
}

#[tokio::test]
async fn a_trapped_instance_is_never_reused() {
    let s = Server::builder().with_misbehave().env("INSTANCE_REUSE", "100").start();
    let id = before(&s).await;
    assert_eq!(calls_seen(&s).await, 1);
    assert_eq!(calls_seen(&s).await, 2);
    s.get("/api/v1/misbehave/trap").await.assert_error(500, "component_failed");
    assert_eq!(calls_seen(&s).await, 1, "the instance that trapped was dropped, not kept");
    assert_eq!(calls_seen(&s).await, 2, "and the fresh one is kept again");
    still_before(&s, id).await;
}
