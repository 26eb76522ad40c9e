//! Native code runs on a replica only when this fleet compiled it. A
//! compiled artifact, shared through the registry or kept in the pod's
//! cache, is loaded only when the fleet's artifact key vouches for it;
//! whoever can write the database or the cache folder can plant one, but
//! the replica refuses it, says so, counts it, and compiles instead. And
//! the registry cannot make a component run another component's bytes.
//! On SQLite first; on PostgreSQL in scripts/test's PostgreSQL pass.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Server, test_component};

const TOKEN: &str = "artifact-token";
const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn builder(key: &str, extra: &[(&str, &str)]) -> crate::support::ServerBuilder {
    Server::builder()
        .with_test_component("/api/v1/versioned", "version_a.wasm", "versioned")
        .env("ADMIN_TOKEN", TOKEN)
        .env("COMPONENT_ARTIFACT_KEY", key)
        .envs(extra)
}

/// A fresh host with `key`, its database and cache its own.
fn host(key: &str) -> Server {
    builder(key, &[]).start()
}

/// `earlier` stopped, and a host with `key` started on its database, its
/// components folder and its cache (as a pod's container restarts).
fn after(earlier: Server, key: &str, extra: &[(&str, &str)]) -> Server {
    let next = builder(key, extra).data_of(&earlier);
    drop(earlier);
    next.start()
}

async fn version(s: &Server) -> Value {
    s.get("/api/v1/versioned").await.body["version"].clone()
}

/// What the admin API says of `versioned` on `s`.
async fn versioned(s: &Server) -> Value {
    let list = s.admin_components(TOKEN).await;
    list["components"].as_array().into_iter().flatten().find(|c| c["name"] == "versioned").cloned().unwrap_or_default()
}

async fn refused(s: &Server, source: &str) -> f64 {
    let series = format!("petstore_component_artifacts_refused_total{{source=\"{source}\"}}");
    s.metrics().await.get(&series).copied().unwrap_or(0.0)
}

fn logged(s: &Server, words: &str) -> bool {
    s.logs().iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains(words)))
}

/// Run `sql` on the registry of `s`'s database as its owner would (an
/// attacker with write access to the database), with `blob` as `$1`.
async fn registry_sql(s: &Server, sql: &str, blob: Option<Vec<u8>>) {
    use sqlx::Connection;
    if s.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&s.database_url).await.expect("connect");
        let sql = format!("SET search_path TO petstore_registry; {sql}");
        let (set, statement) = sql.split_once("; ").expect("two statements");
        sqlx::raw_sql(sqlx::AssertSqlSafe(set.to_string())).execute(&mut conn).await.expect("search_path");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(statement.to_string()));
        if let Some(blob) = blob {
            q = q.bind(blob);
        }
        q.execute(&mut conn).await.expect(statement);
    } else {
        let path = s.database_url.trim_start_matches("sqlite://").replace("petstore.db", "petstore.registry.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await.expect("connect");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        if let Some(blob) = blob {
            q = q.bind(blob);
        }
        q.execute(&mut conn).await.expect(sql);
    }
}

/// A real compiled artifact of the hoarder component, as `petstore compile`
/// makes one: valid native code for this engine, of the wrong component.
fn foreign_artifact(work: &Path) -> Vec<u8> {
    std::fs::write(work.join("routes.toml"), "[routes]\n\"/api/v1/versioned\" = \"versioned.wasm\"\n").expect("routes");
    std::fs::write(work.join("versioned.wasm"), test_component("hoarder.wasm")).expect("component");
    let out = crate::support::command().arg("compile").env("COMPONENTS_DIR", work).output().expect("petstore compile");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::read(path).expect("artifact")
}

/// A host with a version uploaded (and its artifact shared); its digest.
async fn uploaded() -> (Server, String) {
    let first = host(KEY);
    let put = first.upload_component("versioned", test_component("version_b.wasm"), Some(TOKEN)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let digest = put.body["digest"].as_str().expect("digest").trim_start_matches("sha256:").to_string();
    (first, digest)
}

/// `s` refused the artifact `source` (`registry` or `cache`) offered once,
/// said why, and serves the uploaded version compiled from its bytes: not
/// whatever the artifact held.
async fn assert_compiled_instead(s: &Server, source: &str) {
    assert_eq!(version(s).await, "version-b", "the uploaded version");
    assert_eq!(versioned(s).await["precompiled"], false, "compiled");
    assert_eq!(refused(s, source).await, 1.0);
    assert!(logged(s, "not vouched for by this fleet's key"));
}

#[tokio::test]
async fn a_shared_artifact_loads_under_the_fleets_key_and_under_no_other() {
    let (first, _) = uploaded().await;
    // Its cache would serve it too: take the cache away, as on a new pod.
    std::fs::remove_dir_all(first.dir().join("component-cache")).expect("cache");
    let same = after(first, KEY, &[]);
    assert_eq!(version(&same).await, "version-b");
    assert_eq!(versioned(&same).await["precompiled"], true, "loaded from the shared artifact");
    assert_eq!(refused(&same, "registry").await, 0.0);

    std::fs::remove_dir_all(same.dir().join("component-cache")).expect("cache");
    let other = after(same, OTHER_KEY, &[]);
    assert_compiled_instead(&other, "registry").await;
}

#[tokio::test]
async fn a_forged_artifact_in_the_registry_is_refused_and_compiled_instead() {
    let (first, digest) = uploaded().await;
    std::fs::remove_dir_all(first.dir().join("component-cache")).expect("cache");
    // Someone with write access to the database puts other native code (a
    // real artifact, of another component) in the row, with a MAC of their own.
    let work = tempfile::tempdir().expect("temp dir");
    let forged = foreign_artifact(work.path());
    let sql = format!(
        "UPDATE component_versions SET artifact = $1, artifact_mac = '{}' WHERE name = 'versioned' AND digest = '{digest}'",
        "ab".repeat(32)
    );
    registry_sql(&first, &sql, Some(forged)).await;

    let next = after(first, KEY, &[]);
    assert_compiled_instead(&next, "registry").await;
    assert_eq!(next.get("/api/v1/pets").await.status, 200, "the service serves");
}

#[tokio::test]
async fn a_file_planted_in_the_cache_is_refused_and_compiled_instead() {
    let (first, digest) = uploaded().await;
    let cached = first.dir().join("component-cache").join(format!("versioned.{digest}.cwasm"));
    assert!(cached.exists(), "the upload cached its artifact");
    // Whoever can write the cache folder plants another component's native
    // code under this version's name (with a MAC-sized prefix of their own).
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(&cached, [vec![0xab; 32], foreign_artifact(work.path())].concat()).expect("plant");
    // And the shared artifact is gone, so only the cache or a compile remain.
    registry_sql(&first, "UPDATE component_versions SET artifact = NULL, artifact_mac = NULL", None).await;

    let next = after(first, KEY, &[]);
    assert_compiled_instead(&next, "cache").await;
}

#[tokio::test]
async fn the_registry_cannot_make_a_component_run_another_components_image() {
    // With a signing key, only signed versions and a component's own image
    // version are trusted: not another component's image version.
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("key pair");
    let key = pair.pk.to_base64();
    let s = builder(KEY, &[("COMPONENT_PUBLIC_KEY", &key), ("COMPONENT_SYNC_MS", "200")]).start();
    assert_eq!(version(&s).await, "version-a");
    let orders = std::fs::read(s.components_dir().join("orders.wasm")).expect("orders.wasm");
    let digest = petstore_digest(&orders);
    registry_sql(
        &s,
        &format!(
            "INSERT INTO component_versions (name, digest, bytes, size, uploaded_at, uploaded_by)              VALUES ('versioned', '{digest}', $1, 1, '2026-01-01T00:00:00Z', 'image')"
        ),
        Some(orders),
    )
    .await;
    registry_sql(&s, &format!("UPDATE component_active SET digest = '{digest}' WHERE name = 'versioned'"), None).await;
    let report = crate::support::eventually("the replica refusing it", std::time::Duration::from_secs(10), || async {
        let st = versioned(&s).await;
        let replicas = st["replicas"].as_array().cloned().unwrap_or_default();
        replicas.into_iter().find(|r| r["state"] == "failed")
    })
    .await;
    assert!(report["reason"].as_str().is_some_and(|r| r.contains("not signed")), "{report}");
    assert_eq!(version(&s).await, "version-a", "it keeps serving its own version");
}

fn petstore_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
