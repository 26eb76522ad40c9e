//! Hot swap on the admin port: atomic, checked before it replaces anything,
//! and invisible to clients: no request fails or is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use crate::support::{Answer, Server, eventually, test_component};

const TOKEN: &str = "test-admin-token";

fn server() -> Server {
    Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("ADMIN_TOKEN", TOKEN)
        .start()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

async fn listed_digest(s: &Server, name: &str) -> String {
    let list =
        Answer::read(s.client.get(s.admin_url("/admin/components")).bearer_auth(TOKEN).send().await.unwrap()).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let c = list.body["components"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap();
    assert!(c["loaded_at"].as_str().unwrap().ends_with('Z'));
    c["digest"].as_str().unwrap().to_string()
}

async fn version(s: &Server) -> String {
    let a = s.get("/api/v1/versioned").await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_fail_no_request() {
    let s = server();
    let (a, b) = (test_component("version_a.wasm"), test_component("version_b.wasm"));
    let misfit = test_component("misfit.wasm");
    let before = s.create_pet(&serde_json::json!({"name": "Before", "species": "dog"})).await;

    // Several clients, each on its own connection pool, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, client) = (s.url("/api/v1/versioned"), stop.clone(), reqwest::Client::new());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let body: serde_json::Value = resp.json().await.unwrap_or_default();
                            answers.push((status, body["version"].as_str().unwrap_or("").to_string()));
                        }
                        Err(err) => answers.push((0, err.to_string())),
                    }
                }
                answers
            })
        })
        .collect();

    for i in 0..20 {
        let (bytes, expected) = if i % 2 == 0 { (b.clone(), "version-b") } else { (a.clone(), "version-a") };
        let swapped = s.upload_component("versioned", bytes.clone(), Some(TOKEN)).await;
        assert_eq!(swapped.status, 200, "{}", swapped.text);
        assert_eq!(swapped.body["digest"], digest(&bytes));
        // The swap is complete when the upload is answered.
        assert_eq!(version(&s).await, expected, "swap {i}");
        // A bad upload in between is refused and changes nothing.
        let bad = if i % 2 == 0 { misfit.clone() } else { b"not a component".to_vec() };
        s.upload_component("versioned", bad, Some(TOKEN)).await.assert_error(422, "validation_failed");
        assert_eq!(version(&s).await, expected, "after refused upload {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(answers.iter().all(|(_, v)| v == "version-a" || v == "version-b"), "an answer from neither version");
    assert!(answers.iter().any(|(_, v)| v == "version-a") && answers.iter().any(|(_, v)| v == "version-b"));
    assert!(answers.len() >= 40, "the load was real: {} requests", answers.len());
    assert_eq!(listed_digest(&s, "versioned").await, digest(&a), "the last good upload serves");

    let metrics = s.metrics().await;
    assert_eq!(metrics[r#"petstore_component_swaps_total{component="versioned",result="ok"}"#], 20.0);
    assert_eq!(metrics[r#"petstore_component_swaps_total{component="versioned",result="rejected"}"#], 20.0);
    assert_eq!(s.get(&format!("/api/v1/pets/{before}")).await.body["name"], "Before", "data survives swaps");
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_version_they_started_on() {
    let s = server();
    let slow = s.client.get(s.url("/api/v1/versioned?sleep_ms=1500")).send();
    let swap = async {
        // Swap once the slow request is running inside version a.
        wait_for_in_flight(&s).await;
        let swapped = s.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
        assert_eq!(swapped.status, 200);
        version(&s).await
    };
    let (slow, new) = tokio::join!(slow, swap);
    let slow = Answer::read(slow.unwrap()).await;
    assert_eq!(slow.body["version"], "version-a", "the old version finished its request");
    assert_eq!(new, "version-b");
}

/// Wait until the versioned component has an instance running (it counts
/// instantiations), rather than sleeping for a guessed time.
async fn wait_for_in_flight(s: &Server) {
    let key = r#"petstore_component_instantiation_seconds_count{component="versioned"}"#;
    for _ in 0..500 {
        if s.metrics().await.get(key).copied().unwrap_or(0.0) >= 1.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the slow request never started");
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let s = server();
    let b = test_component("version_b.wasm");
    s.upload_component("versioned", b.clone(), None).await.assert_error(401, "unauthorized");
    s.upload_component("versioned", b.clone(), Some("wrong-token")).await.assert_error(401, "unauthorized");
    let list = Answer::read(s.client.get(s.admin_url("/admin/components")).send().await.unwrap()).await;
    list.assert_error(401, "unauthorized");
    assert_eq!(version(&s).await, "version-a", "nothing was swapped");
    s.upload_component("nosuch", b, Some(TOKEN)).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_off_but_metrics_are_served() {
    let s = Server::start();
    let list = Answer::read(s.client.get(s.admin_url("/admin/components")).send().await.unwrap()).await;
    list.assert_error(404, "not_found");
    let put = Answer::read(
        s.client.put(s.admin_url("/admin/components/pets")).bearer_auth("").body(vec![0u8]).send().await.unwrap(),
    )
    .await;
    put.assert_error(404, "not_found");
    assert!(s.metrics().await.contains_key("process_resident_memory_bytes"));
}

#[tokio::test]
async fn a_changed_file_is_swapped_in_by_the_watcher() {
    let s = Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("COMPONENTS_WATCH", "true")
        .start();
    assert_eq!(version(&s).await, "version-a");
    // Write the new version the way an editor or a build would: in place.
    std::fs::write(s.components_dir().join("versioned.wasm"), test_component("version_b.wasm")).unwrap();
    // Polled every 300 ms, applied once steady, then compiled: on a machine
    // loaded by the whole suite that took over 6 s once (a CI run).
    let within = std::time::Duration::from_secs(30);
    eventually("the watcher swaps in the changed file", within, || async { (version(&s).await == "version-b").then_some(()) })
        .await;
}

#[tokio::test]
async fn a_swap_retires_warm_instances_of_the_old_version() {
    let s = Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("ADMIN_TOKEN", TOKEN)
        .env("INSTANCE_REUSE", "1000")
        .start();
    let before = s.create_pet(&serde_json::json!({"name": "Before", "species": "dog"})).await;
    for _ in 0..3 {
        assert_eq!(version(&s).await, "version-a");
    }
    let reuses = r#"petstore_component_instance_reuses_total{component="versioned"}"#;
    assert_eq!(s.metrics().await[reuses], 2.0, "the version-a instance was kept warm");
    let swapped = s.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
    assert_eq!(swapped.status, 200, "{}", swapped.text);
    assert_eq!(version(&s).await, "version-b", "the first request after the swap already gets the new version");
    assert_eq!(version(&s).await, "version-b");
    assert_eq!(s.get(&format!("/api/v1/pets/{before}")).await.body["name"], "Before");
}
