//! PostgreSQL only: the database failing well. Each test runs a PostgreSQL
//! server of its own (scripts/pg-instance), so it can stop and start it.
//! scripts/test runs these with `--include-ignored` on its PostgreSQL pass.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Pg, Server, eventually};

async fn wait_for_status(s: &Server, path: &str, status: u16) {
    let what = format!("{path} answering {status}");
    eventually(&what, Duration::from_secs(30), || async { (s.get(path).await.status == status).then_some(()) }).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_database_that_is_not_up_yet_is_waited_for() {
    let pg = Pg::create(false);
    let s = Server::builder().database(&pg.url()).env("DB_ACQUIRE_TIMEOUT_MS", "500").not_waiting_for_ready().start();
    assert_eq!(s.get("/api/v1/health/live").await.status, 200, "live never depends on the database");
    assert_eq!(s.get("/api/v1/health/ready").await.status, 503);
    let health = s.get("/api/v1/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(
        (health.body["status"].as_str(), health.body["checks"]["database"].as_str()),
        (Some("unavailable"), Some("error"))
    );
    let a = s.get("/api/v1/pets").await;
    a.assert_error(503, "unavailable");
    assert!(a.header("retry-after").is_some());

    pg.start();
    wait_for_status(&s, "/api/v1/health/ready", 200).await;
    assert_eq!(s.post("/api/v1/pets", &json!({"name": "Late", "species": "dog"})).await.status, 201);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn losing_the_database_answers_503_quickly_and_recovers_without_a_restart() {
    let pg = Pg::create(true);
    let s = Server::builder().database(&pg.url()).env("DB_ACQUIRE_TIMEOUT_MS", "1000").start();
    wait_for_status(&s, "/api/v1/health/ready", 200).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.create_pet(&json!({"name": format!("kept-{i}"), "species": "dog"})).await);
    }

    pg.stop();
    let started = Instant::now();
    let a = s.get(&format!("/api/v1/pets/{}", ids[0])).await;
    a.assert_error(503, "unavailable");
    assert!(a.header("retry-after").is_some());
    s.post("/api/v1/pets", &json!({"name": "lost", "species": "dog"})).await.assert_error(503, "unavailable");
    assert!(started.elapsed() < Duration::from_secs(10), "answers did not hang: {:?}", started.elapsed());
    wait_for_status(&s, "/api/v1/health/ready", 503).await;
    assert_eq!(s.get("/api/v1/health/live").await.status, 200);

    pg.start();
    wait_for_status(&s, "/api/v1/health/ready", 200).await;
    for (i, id) in ids.iter().enumerate() {
        let pet = s.get(&format!("/api/v1/pets/{id}")).await;
        assert_eq!(pet.body["name"], format!("kept-{i}"), "a write answered 201 before the outage is still there");
    }
    assert_eq!(s.get("/api/v1/pets").await.body["total"], 5, "the refused write left nothing");
    assert_eq!(s.post("/api/v1/pets", &json!({"name": "after", "species": "dog"})).await.status, 201);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn replicas_starting_together_migrate_once() {
    let pg = Pg::create(true);
    let url = pg.url();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Server::builder().database(&url).start());
        let b = scope.spawn(|| Server::builder().database(&url).start());
        (a.join().unwrap(), b.join().unwrap())
    });
    wait_for_status(&a, "/api/v1/health/ready", 200).await;
    wait_for_status(&b, "/api/v1/health/ready", 200).await;
    let migrations =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres")).unwrap().count();
    assert_eq!(pg.psql("SELECT count(*) FROM _sqlx_migrations WHERE success").parse::<usize>().unwrap(), migrations);
    let id = a.create_pet(&json!({"name": "Shared", "species": "dog"})).await;
    assert_eq!(b.get(&format!("/api/v1/pets/{id}")).await.body["name"], "Shared");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn db_user_and_password_fill_in_a_url_without_credentials() {
    let pg = Pg::create(true);
    // The DBA's step, with `app` as the service's role.
    pg.set_up_roles("app", "secret");
    let url = format!("postgres://127.0.0.1:{}/postgres", pg.port);
    let s = Server::builder().database(&url).env("DB_USER", "app").env("DB_PASSWORD", "secret").start();
    wait_for_status(&s, "/api/v1/health/ready", 200).await;
    assert_eq!(s.post("/api/v1/pets", &json!({"name": "A", "species": "b"})).await.status, 201);
    assert_eq!(pg.psql("SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'petstore'"), "app");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn tls_is_verified_against_the_ca_named_in_the_url() {
    let pg = Pg::create_with(&["create", "--tls"]);
    let url = |mode: &str, ca: &str| {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}&sslrootcert={}/{ca}", pg.port, pg.dir)
    };
    let verified = Server::builder().database(&url("verify-full", "ca.crt")).start();
    wait_for_status(&verified, "/api/v1/health/ready", 200).await;
    assert_eq!(verified.post("/api/v1/pets", &json!({"name": "Tls", "species": "dog"})).await.status, 201);
    let encrypted = "SELECT bool_and(s.ssl) || ' ' || count(DISTINCT a.application_name) FROM pg_stat_ssl s \
                     JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'petstore%'";
    assert_eq!(pg.psql(encrypted), "true 2", "every connection of the host (its own and its components') uses TLS");

    // A server certificate the given CA did not sign: the host never connects.
    let refused = Server::builder()
        .database(&url("verify-full", "other-ca.crt"))
        .env("DB_ACQUIRE_TIMEOUT_MS", "500")
        .not_waiting_for_ready()
        .start();
    for _ in 0..5 {
        assert_eq!(refused.get("/api/v1/health/ready").await.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused.get("/api/v1/pets").await.assert_error(503, "unavailable");
    assert_eq!(refused.get("/api/v1/health/live").await.status, 200);
}
