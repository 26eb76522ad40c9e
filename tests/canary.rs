//! Canary releases judged by the fleet itself: a version uploaded with
//! `?canary=PERCENT` serves that share of its component's requests on
//! every host; the hosts count what it answered in the registry, and the
//! fleet rolls a failing or slow canary back, or promotes a healthy one,
//! on every host with no one watching. Three hosts on one PostgreSQL
//! (`--include-ignored` in scripts/test); the one-host flows run on both
//! backends.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Answer, Server, Traffic, eventually, postgres_database, test_component};

const TOKEN: &str = "canary-token-canary-token-canary-token";
const ARTIFACT_KEY: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";

fn host(name: &str, database: Option<&str>, extra: &[(&str, &str)]) -> Server {
    let mut builder = Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("ADMIN_TOKEN", TOKEN)
        .env("COMPONENT_ARTIFACT_KEY", ARTIFACT_KEY)
        .env("POD_NAME", name)
        .env("COMPONENT_SYNC_MS", "500")
        .envs(extra);
    if let Some(database) = database {
        builder = builder.database(database);
    }
    builder.start()
}

/// How long a test gives every host to follow a fleet decision (a rollback,
/// a promotion) before each request must meet it. Generous, for a machine
/// loaded by the whole suite: `bench/fleet --canary` measures how long it
/// really takes (tens of milliseconds).
const SETTLE: Duration = Duration::from_millis(1500);

async fn status(s: &Server, name: &str) -> Value {
    let list = s.admin_components(TOKEN).await;
    list["components"].as_array().into_iter().flatten().find(|c| c["name"] == name).cloned().unwrap_or(Value::Null)
}

/// PUT `file` as a canary of `versioned` at `percent`. A `503` (the registry did not answer in time,
/// as happens on a machine loaded by the whole suite) is what the admin
/// API tells a client to retry, and `rollout-component` does: so does this,
/// a few times (a PUT that committed before its 503 starts the same canary
/// again).
async fn start_canary(s: &Server, file: &str, percent: &str) -> Answer {
    let mut attempt = 1;
    loop {
        let req = s
            .client
            .put(s.admin_url(&format!("/admin/components/versioned?canary={percent}")))
            .bearer_auth(TOKEN)
            .body(test_component(file));
        let answer = Answer::read(req.send().await.expect("PUT canary")).await;
        if answer.status != 503 || attempt == 5 {
            return answer;
        }
        // The host logs why; say it, so that a run shows the cause.
        let why: Vec<Value> =
            s.logs().into_iter().filter(|l| l["message"] == "the component registry is unavailable").collect();
        println!("PUT canary answered 503 ({}); the host logged {why:?}; retrying", answer.text);
        tokio::time::sleep(Duration::from_secs(1)).await;
        attempt += 1;
    }
}

async fn by_hand(s: &Server, action: &str) -> Answer {
    let req = s.client.post(s.admin_url(&format!("/admin/components/versioned/canary/{action}"))).bearer_auth(TOKEN);
    Answer::read(req.send().await.expect("POST canary action")).await
}

/// Wait until the latest canary of `versioned` is in `state`; its status.
async fn canary_in(s: &Server, state: &str, within: Duration) -> Value {
    eventually(&format!("the canary {state}"), within, || async {
        let canary = status(s, "versioned").await["canary"].clone();
        (canary["state"] == state).then_some(canary)
    })
    .await
}

fn digest(answer: &Value) -> String {
    answer["digest"].as_str().unwrap_or_default().trim_start_matches("sha256:").to_string()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_failing_canary_is_rolled_back_on_every_host_by_itself() {
    let db = postgres_database("canary fleet");
    let (a, b, c) = (host("host-a", Some(&db), &[]), host("host-b", Some(&db), &[]), host("host-c", Some(&db), &[]));
    let hosts = [&a, &b, &c];
    let stable = digest(&status(&a, "versioned").await);
    let pet = a.create_pet(&json!({"name": "Rex", "species": "dog"})).await;
    let traffic = Traffic::start(&hosts, "/api/v1/versioned", 2);
    let (mut decided, mut back, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut canary, mut previous) = (String::new(), Value::Null);
    // bench/fleet --canary measures more rounds; these show it holds.
    for round in 0..3 {
        let put_at = Instant::now();
        let put = start_canary(hosts[round % 3], "failing.wasm", "50").await;
        assert_eq!(put.status, 200, "{}", put.text);
        assert_eq!(put.body["canary"]["percent"], 50, "{}", put.text);
        canary = digest(&put.body);
        let verdict = eventually("the canary rolled back", Duration::from_secs(10), || async {
            let latest = status(&c, "versioned").await["canary"].clone();
            (latest["state"] == "rolled_back" && latest["decided_at"] != previous).then_some(latest)
        })
        .await;
        let decided_at = Instant::now();
        previous = verdict["decided_at"].clone();
        let reason = verdict["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("over CANARY_MAX_ERROR_RATE 1.00%"), "{verdict}");
        // The stable version serves 100 % again on every host within SETTLE.
        tokio::time::sleep(SETTLE + Duration::from_millis(1000)).await;
        let samples = traffic.since(put_at);
        let last_canary = samples.iter().filter(|s| s.digest == canary).map(|s| s.at).max();
        let last_canary = last_canary.expect("the canary served requests before it was rolled back");
        let last_sent = samples.iter().filter(|s| s.digest == canary).map(|s| s.sent).max().unwrap_or(put_at);
        assert!(
            last_sent < decided_at + SETTLE,
            "round {round}: a host took a request for the canary {:?} after the rollback was seen",
            last_sent - decided_at
        );
        // Judged by when a request was sent: one already running when its
        // host switched finishes on the version it started on, by design.
        for host in 0..3 {
            let tail: Vec<_> = samples.iter().filter(|s| s.host == host && s.sent > decided_at + SETTLE).collect();
            assert!(!tail.is_empty(), "round {round}: host {host} answered nothing after the rollback");
            let other: Vec<_> = tail
                .iter()
                .filter(|s| s.status != 200 || s.digest != stable)
                .map(|s| (s.status, s.digest == canary, s.sent - decided_at, s.at - decided_at))
                .collect();
            assert!(other.is_empty(), "round {round}: host {host} not all on stable: (status, canary?, sent, answered) {other:?}");
        }
        // Every failure came from the canary, and none after the rollback.
        let failures: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
        assert!(failures.iter().all(|s| s.digest == canary && s.at <= last_canary), "round {round}: a failure not from the canary");
        decided.push(decided_at - put_at);
        back.push(last_canary - put_at);
        failed.push(failures.len());
    }
    let samples = traffic.stop().await;
    println!(
        "failing canary at 50% on 3 hosts, 3 runs: PUT → rollback seen median {:?} max {:?}; PUT → last canary answer on any host median {:?} max {:?}; failed requests per run {failed:?} of {} requests in all",
        median(decided.clone()),
        decided.iter().max().unwrap(),
        median(back.clone()),
        back.iter().max().unwrap(),
        samples.len(),
    );
    // What was written before is still there, and the stable version is active.
    assert_eq!(b.get(&format!("/api/v1/pets/{pet}")).await.status, 200);
    assert_eq!(status(&b, "versioned").await["desired"], format!("sha256:{stable}"));
    let metrics = a.metrics().await;
    let rolled_back = format!("petstore_canary_state{{component=\"versioned\",digest=\"{canary}\",state=\"rolled_back\"}}");
    assert_eq!(metrics.get(&rolled_back), Some(&1.0), "{rolled_back}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_healthy_canary_is_promoted_on_every_host_by_itself() {
    let db = postgres_database("canary fleet");
    let extra = [("CANARY_MIN_REQUESTS", "300")];
    let (a, b, c) = (host("host-a", Some(&db), &extra), host("host-b", Some(&db), &extra), host("host-c", Some(&db), &extra));
    let hosts = [&a, &b, &c];
    let stable = digest(&status(&a, "versioned").await);
    let put = start_canary(&b, "version_b.wasm", "50").await;
    assert_eq!(put.status, 200, "{}", put.text);
    let canary = digest(&put.body);
    // The traffic that judges the canary starts once every host serves it:
    // on a loaded machine one host may load it after the others have sent
    // the minimum of requests, and nothing would be left to see it split.
    for s in hosts {
        eventually("the host serves the canary", Duration::from_secs(20), || async {
            let answer = s.get("/api/v1/versioned").await;
            (answer.header("x-component-version") == Some(format!("sha256:{canary}").as_str())).then_some(())
        })
        .await;
    }
    let traffic = Traffic::start(&hosts, "/api/v1/versioned", 2);
    let verdict = canary_in(&a, "promoted", Duration::from_secs(30)).await;
    assert!(verdict["requests"].as_u64().unwrap_or(0) >= 300, "{verdict}");
    assert_eq!(verdict["errors"], 0, "{verdict}");
    // Every host serves the promoted version alone.
    let promoted_at = Instant::now();
    tokio::time::sleep(SETTLE + Duration::from_millis(1000)).await;
    let samples = traffic.stop().await;
    for host in 0..3 {
        // By when a request was sent, as for a rollback.
        let tail: Vec<_> = samples.iter().filter(|s| s.host == host && s.sent > promoted_at + SETTLE).collect();
        let other: Vec<_> = tail.iter().filter(|s| s.digest != canary).map(|s| (s.sent - promoted_at, s.at - promoted_at)).collect();
        assert!(!tail.is_empty() && other.is_empty(), "host {host} not on the promoted version: (sent, answered) {other:?}");
        // During the canary, the host served both versions.
        let during: Vec<_> = samples.iter().filter(|s| s.host == host && s.at < promoted_at).collect();
        assert!(during.iter().any(|s| s.digest == stable) && during.iter().any(|s| s.digest == canary), "host {host}");
    }
    assert!(samples.iter().all(|s| s.status == 200), "a request failed during a healthy canary");
    assert_eq!(status(&c, "versioned").await["desired"], format!("sha256:{canary}"));
    for s in hosts {
        let body = s.get("/api/v1/versioned").await.body;
        assert_eq!(body["version"], "version-b");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_replica_restarted_during_a_canary_comes_back_into_it() {
    let db = postgres_database("canary fleet");
    // A canary that is never decided by itself here.
    let extra = [("CANARY_MIN_REQUESTS", "100000000")];
    let a = host("host-a", Some(&db), &extra);
    let b = host("host-b", Some(&db), &extra);
    let put = start_canary(&a, "version_b.wasm", "50").await;
    assert_eq!(put.status, 200, "{}", put.text);
    drop(b);
    let b = host("host-b", Some(&db), &extra);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        seen.insert(b.get("/api/v1/versioned").await.body["version"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(seen, ["version-a", "version-b"].map(String::from).into(), "the restarted host serves both versions");
    assert_eq!(status(&b, "versioned").await["canary"]["state"], "running");
}

#[tokio::test]
async fn a_slow_canary_is_rolled_back_on_its_p95() {
    // Every answer takes 30 ms; the objective is 10 ms: the stable version
    // is as slow, but only the canary is judged.
    let s = host("host-a", None, &[("CANARY_MAX_P95_MS", "10")]);
    let stable = digest(&status(&s, "versioned").await);
    let traffic = Traffic::start(&[&s], "/api/v1/versioned?sleep_ms=30", 4);
    let put = start_canary(&s, "version_b.wasm", "50").await;
    assert_eq!(put.status, 200, "{}", put.text);
    let verdict = canary_in(&s, "rolled_back", Duration::from_secs(10)).await;
    traffic.stop().await;
    assert!(verdict["reason"].as_str().unwrap_or_default().contains("CANARY_MAX_P95_MS 10"), "{verdict}");
    assert!(verdict["slow"].as_u64().unwrap_or(0) >= 1, "{verdict}");
    assert_eq!(status(&s, "versioned").await["desired"], format!("sha256:{stable}"));
    for _ in 0..20 {
        assert_eq!(s.get("/api/v1/versioned").await.body["version"], "version-a");
    }
}

#[tokio::test]
async fn a_canary_is_promoted_or_aborted_by_hand_and_bad_requests_change_nothing() {
    let extra = [("CANARY_MIN_REQUESTS", "100000000")];
    let s = host("host-a", None, &extra);
    let pet = s.create_pet(&json!({"name": "Tom", "species": "cat"})).await;
    let stable = digest(&status(&s, "versioned").await);

    // Refused: no percent, out of range, not a number, nothing to decide.
    for bad in ["0", "100", "fifty", ""] {
        start_canary(&s, "version_b.wasm", bad).await.assert_error(400, "invalid_parameter");
    }
    by_hand(&s, "promote").await.assert_error(409, "conflict");
    by_hand(&s, "abort").await.assert_error(409, "conflict");
    // The active version cannot be its own canary.
    start_canary(&s, "version_a.wasm", "10").await.assert_error(409, "conflict");
    assert!(status(&s, "versioned").await["canary"].is_null());

    // Abort: the stable version serves everything again.
    let put = start_canary(&s, "version_b.wasm", "30").await;
    assert_eq!(put.status, 200, "{}", put.text);
    let running = status(&s, "versioned").await["canary"].clone();
    assert_eq!((running["state"].clone(), running["percent"].clone()), (json!("running"), json!(30)), "{running}");
    let mut versions = std::collections::HashSet::new();
    for _ in 0..100 {
        let answer = s.get("/api/v1/versioned").await;
        let version = answer.body["version"].as_str().unwrap_or_default().to_string();
        let expected = if version == "version-b" { digest(&put.body) } else { stable.clone() };
        assert_eq!(answer.header("x-component-version"), Some(format!("sha256:{expected}").as_str()));
        versions.insert(version);
    }
    assert_eq!(versions.len(), 2, "30% of 100 requests went to the canary: {versions:?}");
    let aborted = by_hand(&s, "abort").await;
    assert_eq!(aborted.status, 200, "{}", aborted.text);
    assert_eq!(aborted.body["canary"]["state"], "aborted");
    assert_eq!(aborted.body["canary"]["reason"], "aborted by hand");
    for _ in 0..20 {
        assert_eq!(s.get("/api/v1/versioned").await.body["version"], "version-a");
    }

    // Promote: the canary becomes the active version.
    assert_eq!(start_canary(&s, "version_b.wasm", "30").await.status, 200);
    let promoted = by_hand(&s, "promote").await;
    assert_eq!(promoted.status, 200, "{}", promoted.text);
    assert_eq!(promoted.body["canary"]["state"], "promoted");
    assert_eq!(promoted.body["desired"], put.body["digest"]);
    for _ in 0..20 {
        assert_eq!(s.get("/api/v1/versioned").await.body["version"], "version-b");
    }
    // Data written before is still there.
    assert_eq!(s.get(&format!("/api/v1/pets/{pet}")).await.body["name"], "Tom");
}

/// `scripts/rollout-component versioned FILE --canary 50` against `admin`:
/// its exit code and what it said.
fn rollout_canary(admin: String, file: std::path::PathBuf) -> (Option<i32>, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rollout-component");
    let out = std::process::Command::new(script)
        .args(["versioned", &file.display().to_string(), "--canary", "50", "--canary-timeout", "30", "--timeout", "20"])
        .env("ADMIN_URL", admin)
        .env("ADMIN_TOKEN", TOKEN)
        .output()
        .expect("scripts/rollout-component");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_rollout_script_waits_for_the_canarys_verdict() {
    let s = host("host-a", None, &[("CANARY_MIN_REQUESTS", "50")]);
    let work = tempfile::tempdir().expect("temp dir");
    let write = |name: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, test_component(name)).expect("component file");
        path
    };
    let (failing, healthy) = (write("failing.wasm"), write("version_b.wasm"));
    let traffic = Traffic::start(&[&s], "/api/v1/versioned", 2);
    let admin = s.admin_url("");
    let (code, said) = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || rollout_canary(admin, failing)
    })
    .await
    .expect("rollout");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("canary rolled_back") && said.contains("over CANARY_MAX_ERROR_RATE"), "{said}");
    let (code, said) = tokio::task::spawn_blocking({
        let (admin, healthy) = (admin.clone(), healthy.clone());
        move || rollout_canary(admin, healthy)
    })
    .await
    .expect("rollout");
    traffic.stop().await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("canary promoted") && said.contains("every replica serves"), "{said}");
    assert_eq!(s.get("/api/v1/versioned").await.body["version"], "version-b");
    // The pipeline rolls out every built component: one that did not change
    // is already active, and that is no failure.
    let (code, said) = tokio::task::spawn_blocking(move || rollout_canary(admin, healthy)).await.expect("rollout");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("nothing to roll out"), "{said}");
}
