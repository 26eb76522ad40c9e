//! SIGTERM drains: readiness turns 503 at once, the listener keeps
//! accepting for the grace period, every request the host accepted gets a
//! complete answer, and the process exits 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Answer, Server, eventually};

fn server() -> Server {
    Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("SHUTDOWN_GRACE_MS", "1000")
        .env("SHUTDOWN_DRAIN_MS", "5000")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_cuts_off_no_accepted_request() {
    let mut s = server();
    let id = s.create_pet(&serde_json::json!({"name": "Before", "species": "dog"})).await;
    // One connection per request: a request either is refused at connect
    // (after the grace period) or was accepted and must be answered whole.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, stop) = (client.clone(), s.url(&format!("/api/v1/pets/{id}")), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut refused, mut broken) = (0, 0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match resp.json::<serde_json::Value>().await {
                                Ok(body) if status == 200 && body["name"] == "Before" => answered += 1,
                                other => broken.push(format!("{status}: {other:?}")),
                            }
                        }
                        Err(err) if err.is_connect() => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        // Reset after connecting: the kernel had queued the
                        // connection but the host never accepted it (checked
                        // below against the host's own count).
                        Err(_) => refused += 1,
                    }
                }
                (answered, refused, broken)
            })
        })
        .collect();
    // A slow request in flight when the signal arrives.
    let slow = client.get(s.url("/api/v1/versioned?sleep_ms=1500")).send();
    let slow = tokio::spawn(slow);
    wait_until_answered(&s, "/api/v1/health/ready", 200).await;
    wait_for_instance(&s).await;

    let signalled = Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(s.pid().to_string()).status();
    // Readiness turns 503 at once, while the listener still accepts.
    wait_until_answered(&s, "/api/v1/health/ready", 503).await;
    assert!(signalled.elapsed() < Duration::from_millis(1000), "readiness was slow to turn");

    let s_logs = s.log_lines();
    let status = tokio::task::spawn_blocking(move || {
        let status = s.wait(Duration::from_secs(15));
        (status, signalled.elapsed())
    });
    let (exit, took) = status.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(took >= Duration::from_millis(1000), "the grace period was kept: {took:?}");
    assert!(took < Duration::from_secs(7), "drained within grace + drain: {took:?}");

    let slow = Answer::read(slow.await.unwrap().expect("the slow request was answered")).await;
    assert_eq!(slow.status, 200);
    assert_eq!(slow.body["version"], "version-a");
    let (mut answered, mut refused) = (0, 0);
    for task in load {
        let (a, r, broken) = task.await.unwrap();
        assert!(broken.is_empty(), "accepted requests were cut off: {broken:?}");
        answered += a;
        refused += r;
    }
    assert!(answered > 20, "the load was real: {answered}");
    assert!(refused > 0, "the listener closed after the grace period");
    // The host's side: nothing it accepted was abandoned, and it answered
    // exactly the requests the clients received.
    let logs = logs_through_stopped(&s_logs).await;
    let stopped = logs.iter().find(|l| l["message"] == "stopped").expect("a stopped line");
    assert_eq!((stopped["in_flight"].as_i64(), stopped["abandoned"].as_i64()), (Some(0), Some(0)), "{stopped}");
    let served = logs.iter().filter(|l| l["message"] == "request" && l["path"] == format!("/api/v1/pets/{id}")).count();
    assert_eq!(served, answered, "every answer the host made reached its client whole");
}

#[test]
fn sigint_stops_an_idle_host_with_exit_code_0() {
    let mut s = Server::builder().env("SHUTDOWN_GRACE_MS", "0").start();
    let _ = std::process::Command::new("kill").arg("-INT").arg(s.pid().to_string()).status();
    assert!(s.wait(Duration::from_secs(5)).success());
}

/// The host's log lines up to its last one ("stopped"), which the reader
/// thread may still be taking from the pipe.
async fn logs_through_stopped(raw: &std::sync::Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    eventually("the stopped line in the host's log", Duration::from_secs(2), || async {
        let logs: Vec<serde_json::Value> =
            raw.lock().unwrap().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        logs.iter().any(|l| l["message"] == "stopped").then_some(logs)
    })
    .await
}

async fn wait_until_answered(s: &Server, path: &str, status: u16) {
    eventually(&format!("{path} answering {status}"), Duration::from_secs(3), || async {
        let resp = s.client.get(s.url(path)).send().await.ok()?;
        (resp.status().as_u16() == status).then_some(())
    })
    .await;
}

/// Once the versioned component has an instance running.
async fn wait_for_instance(s: &Server) {
    let key = r#"petstore_component_instantiation_seconds_count{component="versioned"}"#;
    eventually("an instance of the versioned component", Duration::from_secs(5), || async {
        (s.metrics().await.get(key).copied().unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
}
