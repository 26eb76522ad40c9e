//! SQL stops at its request's deadline. Statements that sleep or never end,
//! twice as many at once as there are connections, are stopped when their
//! requests answer 504; within a second of the last 504 the database serves
//! again: on SQLite the writer and the readers are free, on PostgreSQL none of
//! those statements is left in `pg_stat_activity` and their locks are gone.
//! On SQLite first; on PostgreSQL in scripts/test's PostgreSQL pass.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Answer, COMPONENT_ROLE, Server};

const TIMEOUT_MS: u64 = 1000;
const POOL: usize = 4;
/// An endless statement on either database.
const ENDLESS: &str = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";

fn server() -> Server {
    Server::builder()
        .with_misbehave()
        .env("REQUEST_TIMEOUT_MS", &TIMEOUT_MS.to_string())
        .env("DB_POOL_SIZE", &POOL.to_string())
        .start()
}

fn postgres(s: &Server) -> bool {
    s.database_url.starts_with("postgres")
}

/// Each list of statements run by its own request, all at once; the answers.
async fn all_at_once(s: &Server, requests: Vec<(bool, Vec<Value>)>) -> Vec<Answer> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(transaction, statements)| {
            let (client, url) = (s.client.clone(), s.url("/api/v1/misbehave/sql"));
            tokio::spawn(async move {
                let body = json!({"statements": statements, "transaction": transaction});
                Answer::read(client.post(url).json(&body).send().await.expect("POST")).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

fn query(sql: &str) -> Value {
    json!({"sql": sql, "query": true})
}

fn statement(sql: &str, params: Value) -> Value {
    json!({"sql": sql, "params": params})
}

#[tokio::test]
async fn statements_that_never_end_stop_with_their_504s_and_free_every_connection_at_once() {
    let s = server();
    let kept = s.create_pet(&json!({"name": "Kept", "species": "dog"})).await;
    let kept_before = s.get(&format!("/api/v1/pets/{kept}")).await.body;
    let locked = s.create_pet(&json!({"name": "Locked", "species": "dog"})).await;
    let endless_write = format!("UPDATE pets SET name = name WHERE ({ENDLESS}) > 0");
    let mut requests = Vec::new();
    for i in 0..2 * POOL {
        requests.push(match (i % 3, postgres(&s)) {
            (0, _) => (false, vec![query(ENDLESS)]),
            (1, true) => (false, vec![query("SELECT pg_sleep(60)")]),
            (1, false) => (false, vec![statement(&endless_write, json!([]))]),
            // Holds a row lock while it sleeps or loops.
            (_, pg) => (
                true,
                vec![
                    statement("UPDATE pets SET name = 'Locked' WHERE id = $1", json!([locked])),
                    if pg { query("SELECT pg_sleep(60)") } else { query(ENDLESS) },
                ],
            ),
        });
    }
    let started = Instant::now();
    let answers = all_at_once(&s, requests).await;
    let last_answer = Instant::now();
    for a in &answers {
        a.assert_error(504, "timeout");
    }
    let took = last_answer - started;
    assert!(took < Duration::from_millis(TIMEOUT_MS + 1500), "the 504s came after {took:?}");

    if postgres(&s) {
        // Within a second, none of those statements runs any more.
        let base = std::env::var("PETSTORE_TEST_POSTGRES").expect("a PostgreSQL server");
        let running = || {
            let sql = format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{COMPONENT_ROLE}' \
                 AND (query LIKE '%pg_sleep%' OR query LIKE '%RECURSIVE%') AND state <> 'idle'"
            );
            let out = std::process::Command::new("psql").arg(&base).args(["-tAc", &sql]).output().expect("psql");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        while running() != "0" {
            assert!(last_answer.elapsed() < Duration::from_secs(1), "still running a second after the 504s: {}", running());
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("the statements were gone {:?} after the last 504", last_answer.elapsed());
    }
    // The database serves at once: a write to the row that was locked, a
    // write on the (SQLite) writer, reads on every connection.
    let write = s.send("PUT", &format!("/api/v1/pets/{locked}"), &json!({"name": "Free", "species": "dog"})).await;
    assert_eq!(write.status, 200, "{}", write.text);
    let path = format!("/api/v1/pets/{kept}");
    let reads: Vec<_> = (0..2 * POOL).map(|_| s.get(&path)).collect();
    for read in futures::future::join_all(reads).await {
        assert_eq!(read.body, kept_before, "written before, intact");
    }
    let served = last_answer.elapsed();
    println!("served again {served:?} after the last 504");
    assert!(served < Duration::from_secs(1), "the database served again only {served:?} after the 504s");
}
