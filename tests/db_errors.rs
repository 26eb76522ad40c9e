//! Every class of database error gets the answer its cause deserves: the
//! client's fault (a constraint, a value the database cannot hold) is a 4xx
//! and never "retry later"; contention is retried inside the host while that
//! is safe; only contention that persists, a timeout or an outage is a 503.
//! Bad text (NUL, non-UTF-8) is refused the same way on both backends.
//!
//! The misbehave test component runs the SQL it is sent, so each class is
//! provoked with the real database's own error. The PostgreSQL-only tests
//! run in scripts/test's PostgreSQL pass (`--include-ignored`).

use serde_json::{Value, json};
use crate::support::{Answer, Server};

fn server() -> Server {
    Server::builder().with_misbehave().start()
}

/// Run statements through the misbehave component.
async fn sql(s: &Server, transaction: bool, statements: &[(&str, Value)]) -> Answer {
    let statements: Vec<Value> = statements.iter().map(|(sql, params)| json!({"sql": sql, "params": params})).collect();
    s.post("/api/v1/misbehave/sql", &json!({"statements": statements, "transaction": transaction})).await
}

fn postgres(s: &Server) -> bool {
    s.database_url.starts_with("postgres")
}

/// The answer must not leak the database's words.
fn assert_no_sql(a: &Answer) {
    for word in ["SELECT", "INSERT", "violates", "syntax", "relation", "SQLSTATE", "0x00"] {
        assert!(!a.text.contains(word), "the answer reveals {word:?}: {}", a.text);
    }
}

/// Some pets that every failure below must leave as they are.
async fn seed(s: &Server) -> Vec<Value> {
    let mut pets = Vec::new();
    for name in ["Kept", "Also kept"] {
        let a = s.post("/api/v1/pets", &json!({"name": name, "species": "dog", "tags": ["x"]})).await;
        assert_eq!(a.status, 201, "{}", a.text);
        pets.push(a.body);
    }
    pets
}

async fn assert_still_there(s: &Server, pets: &[Value]) {
    for pet in pets {
        let now = s.get(&format!("/api/v1/pets/{}", pet["id"])).await;
        assert_eq!(&now.body, pet, "a pet written before the failure is unchanged");
    }
    assert_eq!(s.get("/api/v1/pets").await.body["total"], pets.len(), "the failure wrote nothing");
}

#[tokio::test]
async fn nul_in_a_body_is_a_422_naming_the_field_on_every_write() {
    let s = Server::start();
    let pets = seed(&s).await;
    let id = pets[0]["id"].as_i64().expect("id");
    for (method, path, body, field) in [
        ("POST", "/api/v1/pets".to_string(), json!({"name": "a\u{0}b", "species": "dog"}), "name"),
        ("POST", "/api/v1/pets".to_string(), json!({"name": "a", "species": "\u{0}"}), "species"),
        ("POST", "/api/v1/pets".to_string(), json!({"name": "a", "species": "b", "tags": ["ok", "n\u{0}"]}), "tags[1]"),
        ("PUT", format!("/api/v1/pets/{id}"), json!({"name": "\u{0}", "species": "dog"}), "name"),
        ("PATCH", format!("/api/v1/pets/{id}"), json!({"tags": ["\u{0}"]}), "tags[0]"),
    ] {
        let a = s.send(method, &path, &body).await;
        a.assert_error(422, "validation_failed");
        assert!(a.header("retry-after").is_none(), "never 'retry later'");
        let fields: Vec<&str> = a.body["error"]["details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert_eq!(fields, [field], "{method} {path}: {}", a.text);
    }
    assert_still_there(&s, &pets).await;
}

#[tokio::test]
async fn nul_or_broken_utf8_in_a_query_is_a_400_naming_the_parameter() {
    let s = Server::start();
    let pets = seed(&s).await;
    for (query, name) in [
        ("species=%00", "species"),
        ("tag=a%00", "tag"),
        ("species=%FF", "species"),
        ("tag=%C3", "tag"),
        ("status=%00", "status"),
        ("limit=%00", "limit"),
    ] {
        let a = s.get(&format!("/api/v1/pets?{query}")).await;
        a.assert_error(400, "invalid_parameter");
        assert!(a.body["error"]["message"].as_str().is_some_and(|m| m.starts_with(name)), "{query}: {}", a.text);
    }
    s.get("/api/v1/orders?status=%00").await.assert_error(400, "invalid_parameter");
    // Text that is merely unusual is fine.
    assert_eq!(s.get("/api/v1/pets?species=%E2%9C%93%01").await.status, 200);
    assert_still_there(&s, &pets).await;
}

#[tokio::test]
async fn a_constraint_violation_is_a_409() {
    let s = server();
    let pets = seed(&s).await;
    let a = sql(&s, true, &[("INSERT INTO pet_tags (pet_id, tag) VALUES ($1, 'x')", json!([pets[0]["id"]]))]).await;
    a.assert_error(409, "conflict");
    assert_no_sql(&a);
    let a = sql(&s, false, &[("UPDATE pets SET status = 'lost' WHERE id = $1", json!([pets[0]["id"]]))]).await;
    a.assert_error(409, "conflict");
    assert_still_there(&s, &pets).await;
}

#[tokio::test]
async fn a_value_the_database_cannot_hold_is_a_422_not_a_503() {
    let s = server();
    let pets = seed(&s).await;
    // Each backend's own data exception.
    let statements: Vec<(&str, Value)> = if postgres(&s) {
        vec![
            ("UPDATE pets SET name = $1 WHERE id = 1", json!(["a\u{0}b"])),
            ("SELECT CAST($1 AS integer)", json!(["abc"])),
            ("SELECT 1 / 0", json!([])),
            ("SELECT CAST(99999999999 AS integer)", json!([])),
        ]
    } else {
        vec![("UPDATE pets SET id = $1 WHERE id = 1", json!(["not an integer"]))]
    };
    for (statement, params) in statements {
        for transaction in [false, true] {
            let a = sql(&s, transaction, &[(statement, params.clone())]).await;
            a.assert_error(422, "validation_failed");
            assert!(a.header("retry-after").is_none(), "{statement}: never 'retry later'");
            assert_no_sql(&a);
        }
    }
    assert_still_there(&s, &pets).await;
}

#[tokio::test]
async fn a_bug_in_a_handlers_sql_is_a_500_that_reveals_nothing() {
    let s = server();
    let pets = seed(&s).await;
    let a = sql(&s, true, &[("SELECT * FROM no_such_table", json!([]))]).await;
    a.assert_error(500, "internal");
    assert_no_sql(&a);
    assert_still_there(&s, &pets).await;
}

// ---- PostgreSQL: contention, timeouts and outages by their SQLSTATE ----

/// A statement that fails with `sqlstate` when the sequence `attempts`, bumped
/// by every run (sequences ignore rollbacks), is at most `failing_runs`.
fn fail_first_runs(sqlstate: &str, failing_runs: u32) -> String {
    format!("SELECT provoke('{sqlstate}', {failing_runs})")
}

/// Run the statement of [`fail_first_runs`] (in a transaction or not).
async fn provoke(s: &Server, transaction: bool, sqlstate: &str, failing_runs: u32) -> Answer {
    sql(s, transaction, &[(&fail_first_runs(sqlstate, failing_runs), json!([]))]).await
}

/// `503 unavailable` with `Retry-After`: the one answer that invites a retry.
fn assert_retry_later(a: &Answer) {
    a.assert_error(503, "unavailable");
    assert_eq!(a.header("retry-after"), Some("1"), "{}", a.text);
}

fn psql(s: &Server, statement: &str) -> String {
    let out = std::process::Command::new("psql").arg(&s.database_url).args(["-tAc", statement]).output().expect("psql");
    assert!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn postgres_server(env: &[(&str, &str)]) -> Server {
    let mut builder = Server::builder().with_misbehave();
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let s = builder.start();
    assert!(postgres(&s), "set PETSTORE_TEST_POSTGRES (scripts/test does) to run the PostgreSQL tests");
    // What the component runs to fail on purpose: made by the database's
    // owner and granted, since components may create nothing themselves.
    let component = crate::support::COMPONENT_ROLE;
    psql(
        &s,
        &format!(
            "CREATE SEQUENCE attempts; GRANT USAGE ON SEQUENCE attempts TO {component}; \
             CREATE FUNCTION provoke(code text, failing int) RETURNS void LANGUAGE plpgsql AS $$ BEGIN \
             IF nextval('attempts') <= failing THEN RAISE EXCEPTION 'provoked' USING ERRCODE = code; END IF; END $$; \
             GRANT EXECUTE ON FUNCTION provoke(text, int) TO {component}"
        ),
    );
    s
}

/// A PostgreSQL server with the pets every failure must leave alone.
async fn seeded_postgres(env: &[(&str, &str)]) -> (Server, Vec<Value>) {
    let s = postgres_server(env);
    let pets = seed(&s).await;
    (s, pets)
}

fn runs(s: &Server) -> i64 {
    psql(s, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM attempts").parse().expect("a number")
}

async fn contention_retries(s: &Server) -> f64 {
    s.metrics().await.get("petstore_db_contention_retries_total{component=\"misbehave\"}").copied().unwrap_or(0.0)
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_serialization_failure_or_deadlock_is_retried_inside_the_host() {
    for sqlstate in ["40001", "40P01"] {
        let s = postgres_server(&[]);
        let pets = seed(&s).await;
        let insert = ("INSERT INTO pet_tags (pet_id, tag) VALUES ($1, 'retried')", json!([pets[1]["id"]]));
        let a = sql(&s, true, &[insert, (&fail_first_runs(sqlstate, 2), json!([]))]).await;
        assert_eq!(a.status, 200, "{sqlstate}: lost twice, then won: {}", a.text);
        assert_eq!(runs(&s), 3);
        assert_eq!(contention_retries(&s).await, 2.0);
        // The transaction's write happened exactly once.
        assert_eq!(psql(&s, "SELECT count(*) FROM pet_tags WHERE tag = 'retried'"), "1");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn contention_that_persists_is_a_503_after_three_runs() {
    let (s, pets) = seeded_postgres(&[]).await;
    assert_retry_later(&provoke(&s, true, "40001", 100).await);
    assert_eq!(runs(&s), 3);
    assert_still_there(&s, &pets).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_request_that_committed_something_is_never_run_twice() {
    let (s, pets) = seeded_postgres(&[]).await;
    // The first statement commits by itself; the second then loses.
    let a = sql(
        &s,
        false,
        &[
            ("INSERT INTO pet_tags (pet_id, tag) VALUES ($1, 'once')", json!([pets[1]["id"]])),
            (&fail_first_runs("40001", 1), json!([])),
        ],
    )
    .await;
    assert_retry_later(&a);
    assert_eq!(runs(&s), 1, "not run again");
    assert_eq!(psql(&s, "SELECT count(*) FROM pet_tags WHERE tag = 'once'"), "1");
    assert_eq!(contention_retries(&s).await, 0.0);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_statement_or_lock_timeout_is_a_503_to_retry_later() {
    let (s, pets) = seeded_postgres(&[("DB_STATEMENT_TIMEOUT_MS", "200")]).await;
    assert_retry_later(&sql(&s, false, &[("SELECT pg_sleep(2)", json!([]))]).await);
    assert_retry_later(&provoke(&s, true, "55P03", 100).await);
    assert_eq!(runs(&s), 1, "a lock timeout is not retried inside the host");
    assert_still_there(&s, &pets).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: scripts/test runs it"]
async fn a_database_out_of_resources_or_shutting_down_is_a_503() {
    let (s, pets) = seeded_postgres(&[]).await;
    for sqlstate in ["53300", "53100", "57P01", "08006"] {
        assert_retry_later(&provoke(&s, false, sqlstate, 100).await);
    }
    assert_still_there(&s, &pets).await;
}
