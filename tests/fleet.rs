//! Hot swap for the whole fleet: hosts sharing one database converge on the
//! component registry. An upload to one host (or a rollback) reaches every
//! host with no failed request; a restarted host and one that was down come
//! back on the active version; production refuses unsigned or wrongly signed
//! uploads without changing anything; a database failing mid-upload changes
//! nothing; a host that cannot load a version keeps its old one and says
//! why. The fleet needs PostgreSQL (`--include-ignored` in scripts/test);
//! the one-host flow runs on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{Pg, Server, eventually, fresh_database, postgres_database, test_component};

/// Long enough for staging and production (32 bytes or more).
const TOKEN: &str = "fleet-token-fleet-token-fleet-token";
/// The fleet's artifact key: hosts that share it share compiled artifacts.
const ARTIFACT_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
/// How often hosts check the registry in these tests (their heartbeat).
const SYNC_MS: &str = "500";

fn host(name: &str, database: &str, extra: &[(&str, &str)]) -> Server {
    Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .database(database)
        .env("ADMIN_TOKEN", TOKEN)
        .env("COMPONENT_ARTIFACT_KEY", ARTIFACT_KEY)
        .env("POD_NAME", name)
        .env("COMPONENT_SYNC_MS", SYNC_MS)
        .envs(extra)
        .start()
}

async fn version(s: &Server) -> String {
    s.get("/api/v1/versioned").await.body["version"].as_str().unwrap_or_default().to_string()
}

/// Wait until every host answers `expected`; how long that took.
async fn all_serve(hosts: &[&Server], expected: &str, within: Duration) -> Duration {
    let started = Instant::now();
    for s in hosts {
        let what = format!("host {} serving {expected}", s.port);
        eventually(&what, within, || async { (version(s).await == expected).then_some(()) }).await;
    }
    started.elapsed()
}

/// Requests to every host, until stopped: how many, and how many failed.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(hosts: &[&Server]) -> Load {
        let (stop, sent, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let tasks = hosts
            .iter()
            .map(|s| {
                let (url, client) = (s.url("/api/v1/versioned"), s.client.clone());
                let (stop, sent, failed): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
                    (stop.clone(), Arc::clone(&sent), Arc::clone(&failed));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let ok = client.get(&url).send().await.is_ok_and(|r| r.status() == 200);
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load { stop, sent, failed, tasks }
    }

    /// Stop; (sent, failed).
    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// The fleet status of component `name` as host `s` reports it.
async fn status(s: &Server, name: &str) -> Value {
    let list = s.admin_components(TOKEN).await;
    list["components"].as_array().into_iter().flatten().find(|c| c["name"] == name).cloned().unwrap_or(Value::Null)
}

/// `PUT /admin/components/versioned/active` with `digest`; the status.
async fn activate(s: &Server, digest: &str) -> u16 {
    let req = s.client.put(s.admin_url("/admin/components/versioned/active")).bearer_auth(TOKEN);
    req.json(&json!({ "digest": digest })).send().await.expect("activate").status().as_u16()
}

async fn digest_of(s: &Server, name: &str) -> String {
    status(s, name).await["digest"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn an_upload_to_one_host_reaches_every_host_with_no_failed_request() {
    let db = postgres_database("fleet");
    let (a, b, c) = (host("host-a", &db, &[]), host("host-b", &db, &[]), host("host-c", &db, &[]));
    let hosts = [&a, &b, &c];
    all_serve(&hosts, "version-a", Duration::from_secs(10)).await;
    let load = Load::start(&hosts);
    let sent_at = Instant::now();
    let put = a.upload_component_with("versioned", test_component("version_b.wasm"), Some(TOKEN), &[("x-uploaded-by", "fleet test")]).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let answered = sent_at.elapsed();
    let propagated = all_serve(&hosts, "version-b", Duration::from_secs(10)).await;
    let (sent, failed) = load.stop().await;
    println!(
        "PUT answered in {answered:?}; every host served the new version {:?} after the PUT ({sent} requests, {failed} failed)",
        answered + propagated
    );
    assert_eq!(failed, 0, "of {sent} requests during the rollout");
    assert!(propagated < Duration::from_secs(1), "every host served it {propagated:?} after the PUT was answered");

    // The registry records it, and every live replica reports it converged.
    let new_digest = put.body["digest"].as_str().expect("digest").to_string();
    eventually("every replica reporting the new version", Duration::from_secs(5), || async {
        let st = status(&c, "versioned").await;
        let replicas = st["replicas"].as_array().cloned().unwrap_or_default();
        let all = replicas.len() == 3 && replicas.iter().all(|r| r["digest"] == new_digest && r["state"] == "converged");
        (st["converged"] == true && all).then_some(())
    })
    .await;
    let versions = status(&b, "versioned").await["versions"].clone();
    let uploaded = versions.as_array().expect("versions").iter().find(|v| v["digest"] == new_digest).cloned();
    assert_eq!(uploaded.as_ref().map(|v| v["uploaded_by"].clone()), Some(json!("fleet test")), "{versions}");
    assert_eq!(uploaded.map(|v| v["active"].clone()), Some(json!(true)));
    let info = format!("petstore_component_info{{component=\"versioned\",digest=\"{}\"}}", &new_digest[7..]);
    assert_eq!(b.metrics().await.get(&info), Some(&1.0), "{info}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_restarted_host_and_one_that_was_down_come_back_on_the_active_version() {
    let db = postgres_database("fleet");
    let a = host("host-a", &db, &[]);
    let b = host("host-b", &db, &[]);
    all_serve(&[&a, &b], "version-a", Duration::from_secs(10)).await;
    let put = a.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    all_serve(&[&a, &b], "version-b", Duration::from_secs(10)).await;

    // Restarted: from its first ready answer it serves the registry's version, not its image's.
    drop(b);
    let b = host("host-b", &db, &[]);
    assert_eq!(version(&b).await, "version-b");
    // Down during the rollout: a host that starts now catches up the same way.
    let c = host("host-c", &db, &[]);
    assert_eq!(version(&c).await, "version-b");
    assert_eq!(digest_of(&c, "versioned").await, put.body["digest"].as_str().unwrap_or_default());
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_rollback_reaches_every_host_the_same_way() {
    let db = postgres_database("fleet");
    let (a, b) = (host("host-a", &db, &[]), host("host-b", &db, &[]));
    all_serve(&[&a, &b], "version-a", Duration::from_secs(10)).await;
    let original = digest_of(&a, "versioned").await;
    assert_eq!(a.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await.status, 200);
    all_serve(&[&a, &b], "version-b", Duration::from_secs(10)).await;

    let load = Load::start(&[&a, &b]);
    assert_eq!(activate(&b, &original).await, 200);
    let took = all_serve(&[&a, &b], "version-a", Duration::from_secs(10)).await;
    let (sent, failed) = load.stop().await;
    println!("rollback reached both hosts in {took:?} ({sent} requests, {failed} failed)");
    assert_eq!(failed, 0);
    // A digest never stored is a 404 and changes nothing.
    assert_eq!(activate(&b, &format!("sha256:{}", "0".repeat(64))).await, 404);
    assert_eq!(version(&a).await, "version-a");
}

/// A minisign key pair: (public key for COMPONENT_PUBLIC_KEY, secret key).
fn key_pair() -> (String, minisign::SecretKey) {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
    (pair.pk.to_base64(), pair.sk)
}

/// The header value carrying `bytes`' signature by `secret`, for version 1
/// of `versioned` in production.
fn signature(secret: &minisign::SecretKey, bytes: &[u8]) -> String {
    let comment = "petstore component=versioned environment=production version=1";
    let signed = minisign::sign(None, secret, std::io::Cursor::new(bytes), Some(comment), None).expect("sign");
    base64::engine::general_purpose::STANDARD.encode(signed.to_string())
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn production_refuses_unsigned_and_wrongly_signed_uploads_and_nothing_changes() {
    let db = postgres_database("fleet");
    let (public, secret) = key_pair();
    let (_, other_secret) = key_pair();
    let production = [("ENVIRONMENT", "production"), ("COMPONENT_PUBLIC_KEY", public.as_str())];
    let (a, b) = (host("host-a", &db, &production), host("host-b", &db, &production));
    all_serve(&[&a, &b], "version-a", Duration::from_secs(10)).await;
    let versions_before = status(&a, "versioned").await["versions"].clone();
    let bytes = test_component("version_b.wasm");

    let unsigned = a.upload_component("versioned", bytes.clone(), Some(TOKEN)).await;
    unsigned.assert_error(403, "signature_rejected");
    let wrong = signature(&other_secret, &bytes);
    let wrongly = a.upload_component_with("versioned", bytes.clone(), Some(TOKEN), &[("x-component-signature", &wrong)]).await;
    wrongly.assert_error(403, "signature_rejected");
    let tampered = signature(&secret, b"other bytes");
    let for_other = a.upload_component_with("versioned", bytes.clone(), Some(TOKEN), &[("x-component-signature", &tampered)]).await;
    for_other.assert_error(403, "signature_rejected");
    assert_eq!(status(&b, "versioned").await["versions"], versions_before, "nothing was stored");
    for s in [&a, &b] {
        assert_eq!(version(s).await, "version-a", "no host changed");
    }

    let good = signature(&secret, &bytes);
    let signed = b.upload_component_with("versioned", bytes, Some(TOKEN), &[("x-component-signature", &good)]).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    all_serve(&[&a, &b], "version-b", Duration::from_secs(10)).await;
    let versions = status(&a, "versioned").await["versions"].clone();
    assert!(versions.as_array().expect("versions").iter().any(|v| v["signed"] == true && v["active"] == true));
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn the_database_failing_during_an_upload_changes_nothing() {
    let pg = Pg::create(true);
    let (a, b) = (host("host-a", &pg.url(), &[]), host("host-b", &pg.url(), &[]));
    all_serve(&[&a, &b], "version-a", Duration::from_secs(10)).await;
    let active_before = pg.psql("SELECT digest FROM petstore_registry.component_active WHERE name = 'versioned'");

    pg.stop();
    let put = a.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
    put.assert_error(503, "unavailable");
    for s in [&a, &b] {
        assert_eq!(version(s).await, "version-a", "the old version keeps serving everywhere");
    }
    pg.start();
    eventually("host-a ready again", Duration::from_secs(30), || async {
        (a.get("/api/v1/health/ready").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(pg.psql("SELECT digest FROM petstore_registry.component_active WHERE name = 'versioned'"), active_before);
    assert_eq!(pg.psql("SELECT count(*) FROM petstore_registry.component_versions WHERE name = 'versioned'"), "1", "nothing half-stored");
    for s in [&a, &b] {
        assert_eq!(version(s).await, "version-a");
    }
}

/// Three hosts on one database, serving version-a; the third's instances
/// may not grow to the 16 MiB the hoarder starts with.
async fn two_hosts_and_a_small_one() -> (Server, Server, Server) {
    let db = postgres_database("fleet");
    let (a, b) = (host("host-a", &db, &[]), host("host-b", &db, &[]));
    let c = host("host-c", &db, &[("INSTANCE_MEMORY_MB", "8")]);
    all_serve(&[&a, &b, &c], "version-a", Duration::from_secs(10)).await;
    (a, b, c)
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_host_that_cannot_load_a_version_keeps_its_own_and_says_why() {
    let (a, b, c) = two_hosts_and_a_small_one().await;
    let put = a.upload_component("versioned", test_component("hoarder.wasm"), Some(TOKEN)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    all_serve(&[&a, &b], "hoarder", Duration::from_secs(10)).await;
    let report = eventually("host-c reporting its failure", Duration::from_secs(10), || async {
        let replicas = status(&a, "versioned").await["replicas"].as_array().cloned().unwrap_or_default();
        replicas.into_iter().find(|r| r["replica"] == "host-c" && r["state"] == "failed")
    })
    .await;
    assert!(report["reason"].as_str().is_some_and(|r| r.contains("memory")), "{report}");
    assert_eq!(version(&c).await, "version-a", "host-c keeps serving its old version");
    assert_eq!(status(&b, "versioned").await["converged"], false, "the fleet is not converged");
}

/// The whole flow on one host, on either backend (SQLite needs nothing more).
#[tokio::test]
async fn one_host_swaps_keeps_the_version_across_a_restart_and_rolls_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = fresh_database(dir.path());
    let s = host("solo", &db, &[]);
    let original = digest_of(&s, "versioned").await;
    let put = s.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(version(&s).await, "version-b", "served as soon as the PUT is answered");
    drop(s);

    let s = host("solo", &db, &[]);
    assert_eq!(version(&s).await, "version-b", "the upload survives a restart");
    assert_eq!(activate(&s, &original).await, 200);
    assert_eq!(version(&s).await, "version-a");
    let st = status(&s, "versioned").await;
    assert_eq!(st["versions"].as_array().map(Vec::len), Some(2), "{st}");
    assert_eq!(st["converged"], true, "{st}");
}

/// A stand-in for `kubectl` that "forwards" to a host's admin port (it just
/// names it, as kubectl prints the local port it listens on) and serves the
/// `petstore-admin` Secret's token: the script's kubectl flow, without a
/// cluster. It records its arguments.
fn fake_kubectl(dir: &std::path::Path, admin_port: u16) -> std::path::PathBuf {
    let path = dir.join("kubectl");
    let token = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\ncase \"$*\" in\n  *port-forward*) echo 'Forwarding from 127.0.0.1:{admin_port} -> 9090'; exec sleep 300 ;;\n  *secret*) printf '{token}' ;;\nesac\n",
        log = dir.join("kubectl.log").display()
    );
    std::fs::write(&path, script).expect("fake kubectl");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    path
}

fn rollout(kubectl: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rollout-component"))
        .args(["versioned", &file.display().to_string(), "--namespace", "petstore-test", "--timeout", "20"])
        .env("KUBECTL", kubectl)
        .env_remove("ADMIN_URL")
        .env_remove("ADMIN_TOKEN")
        .output()
        .expect("scripts/rollout-component")
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn the_rollout_script_waits_for_every_replica_and_rolls_back_when_one_cannot_load() {
    let (a, b, c) = two_hosts_and_a_small_one().await;
    let work = tempfile::tempdir().expect("temp dir");
    let kubectl = fake_kubectl(work.path(), a.admin_port);
    let write = |name: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, test_component(name)).expect("component file");
        path
    };

    let out = rollout(&kubectl, &write("version_b.wasm"));
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("every replica serves"), "{said}");
    for s in [&a, &b, &c] {
        assert_eq!(version(s).await, "version-b", "done means done everywhere");
    }
    let calls = std::fs::read_to_string(work.path().join("kubectl.log")).expect("kubectl log");
    assert!(calls.contains("-n petstore-test port-forward svc/petstore-admin :9090"), "{calls}");

    // host-c cannot load the hoarder: the script rolls back, and says so.
    let out = rollout(&kubectl, &write("hoarder.wasm"));
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("host-c: failed") && said.contains("rolled back"), "{said}");
    all_serve(&[&a, &b, &c], "version-b", Duration::from_secs(10)).await;
    assert_eq!(status(&a, "versioned").await["converged"], true);
}
