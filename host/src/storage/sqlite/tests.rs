//! The SQLite backend on real files: its checkpoints, and its sandbox as
//! SQLite enforces it (the end-to-end tests attack it through a component).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::storage::{Caller, Grant};

const PAGE: u64 = 4096;

fn options() -> ConnectOptions {
    ConnectOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        user: None,
        password: None,
        components: None,
    }
}

async fn open_in(dir: &tempfile::TempDir) -> (Sqlite, std::path::PathBuf) {
    let path = dir.path().join("wal.db");
    let (db, _) = Sqlite::open(&format!("sqlite://{}", path.display()), &options()).await.expect("open");
    db.execute(&Caller::Host, "CREATE TABLE filler (b BLOB NOT NULL)", vec![]).await.expect("table");
    (db, path)
}

/// A component allowed the service's tables, with `within` left.
fn component(within: Duration) -> Caller {
    Caller::Component {
        grant: Arc::new(Grant::new("petsy", ["pets", "pet_tags", "orders"])),
        deadline: tokio::time::Instant::now() + within,
    }
}

/// Write about `pages` pages, a statement (and commit) per page.
async fn write_pages(db: &Sqlite, pages: u64) {
    for _ in 0..pages {
        let blob = Value::Blob(vec![7; PAGE as usize - 200]);
        db.execute(&Caller::Host, "INSERT INTO filler (b) VALUES ($1)", vec![blob]).await.expect("insert");
    }
}

/// One pet, so that a statement over `pets` has a row to work on.
async fn add_pet(db: &Sqlite) {
    let insert = "INSERT INTO pets (name, species, tags, status, created_at, updated_at) \
                  VALUES ('Rex', 'dog', '[]', 'available', 't', 't')";
    db.execute(&Caller::Host, insert, vec![]).await.expect("a pet");
}

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

async fn count(db: &Sqlite, table: &str) -> Value {
    let rows = db.query(&Caller::Host, &format!("SELECT count(*) FROM {table}"), vec![]).await.expect("count");
    rows.rows[0][0].clone()
}

/// Fewer pages than a commit's own checkpoint waits for reach the
/// database file anyway: the background checkpoint copies them.
#[tokio::test]
async fn written_pages_reach_the_database_file_without_a_commit_checkpointing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, path) = open_in(&dir).await;
    let before = size(&path);
    write_pages(&db, 500).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while size(&path) < before + 400 * PAGE {
        assert!(std::time::Instant::now() < deadline, "the database file stayed at {} bytes", size(&path));
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
    }
    assert_eq!(count(&db, "filler").await, Value::Integer(500), "nothing lost");
}

/// Writes that never pause still leave the WAL bounded: the commit that
/// reaches the mark rewinds it (a background checkpoint alone cannot).
#[tokio::test]
async fn the_wal_stays_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, path) = open_in(&dir).await;
    let pages = 4 * u64::from(WAL_AUTOCHECKPOINT_PAGES);
    write_pages(&db, pages).await;
    let wal = size(&path.with_extension("db-wal"));
    // Twice the mark: a commit's checkpoint that meets the background
    // one running gives way, and the next commits try again; unbounded,
    // the WAL would hold all four marks' worth.
    let bound = 2 * u64::from(WAL_AUTOCHECKPOINT_PAGES) * (PAGE + 24);
    assert!(wal <= bound, "WAL is {wal} bytes after {pages} pages, bound {bound}");
    assert_eq!(count(&db, "filler").await, Value::Integer(pages as i64), "nothing lost");
}

#[tokio::test]
async fn the_bundled_sqlite_has_the_2025_memory_safety_fixes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _) = open_in(&dir).await;
    let rows = db.query(&Caller::Host, "SELECT sqlite_version()", vec![]).await.expect("version");
    let Value::Text(version) = &rows.rows[0][0] else { panic!("{rows:?}") };
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().expect("a number")).collect();
    assert!(parts >= vec![3, 50, 2], "SQLite {version} predates 3.50.2");
}

#[tokio::test]
async fn the_registry_is_a_file_of_its_own_that_the_data_does_not_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("petstore.db");
    let (data, registry) = Sqlite::open(&format!("sqlite://{}", path.display()), &options()).await.expect("open");
    assert!(dir.path().join("petstore.registry.db").exists());
    let tables = "SELECT count(*) FROM sqlite_master WHERE name = 'component_versions'";
    let in_data = data.query(&Caller::Host, tables, vec![]).await.expect("data");
    let in_registry = registry.query(&Caller::Host, tables, vec![]).await.expect("registry");
    assert_eq!((&in_data.rows[0][0], &in_registry.rows[0][0]), (&Value::Integer(0), &Value::Integer(1)));
}

#[tokio::test]
async fn a_component_reaches_its_tables_and_nothing_else_and_the_host_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _) = open_in(&dir).await;
    let me = component(Duration::from_secs(5));
    let insert = "INSERT INTO pets (name, species, tags, status, created_at, updated_at) \
                  VALUES ('Rex', 'dog', '[\"a\"]', 'available', 't', 't') RETURNING id";
    let id = db.query(&me, insert, vec![]).await.expect("its own table, with the trigger's pet_tags");
    assert_eq!(id.rows.len(), 1);
    for (sql, refused_for) in [
        ("SELECT * FROM _sqlx_migrations", "_sqlx_migrations"),
        ("SELECT name FROM sqlite_master", "sqlite_master"),
        ("PRAGMA query_only = 1", "PRAGMA"),
        ("ATTACH DATABASE 'stolen.db' AS stolen", "ATTACH"),
        ("VACUUM INTO 'copy.db'", "VACUUM"),
        ("CREATE TRIGGER t AFTER INSERT ON pets BEGIN DELETE FROM pets; END", "CREATE"),
        ("CREATE TABLE t (x)", "CREATE"),
        ("DROP TABLE pet_tags", "DROP"),
        ("WITH x AS (SELECT 1) SELECT * FROM sqlite_schema", "sqlite_schema"),
        ("INSERT INTO pets (name) SELECT name FROM sqlite_master", "sqlite_master"),
        ("BEGIN", "BEGIN"),
        ("SELECT 1; DELETE FROM pets", "more than one"),
    ] {
        let err = db.execute(&me, sql, vec![]).await.expect_err(sql);
        assert!(
            matches!(&err, DbError::Forbidden(why) if why.contains(refused_for) && why.contains("petsy")),
            "{sql}: {err}"
        );
    }
    // SQLite itself refuses extensions (the sandbox turned them off).
    assert!(db.query(&me, "SELECT load_extension('x')", vec![]).await.is_err());
    assert!(!dir.path().join("stolen.db").exists() && !dir.path().join("copy.db").exists(), "no file written");
    // The same text the host may run is refused for the component even
    // after the host prepared it (no statement is shared between callers).
    db.query(&Caller::Host, "SELECT count(*) FROM _sqlx_migrations", vec![]).await.expect("the host reads everything");
    let err = db.query(&me, "SELECT count(*) FROM _sqlx_migrations", vec![]).await.expect_err("not the component");
    assert!(matches!(err, DbError::Forbidden(_)), "{err}");
    db.execute(&Caller::Host, "UPDATE pets SET name = 'Rex II'", vec![]).await.expect("writes still work");
    assert_eq!(count(&db, "pet_tags").await, Value::Integer(1), "the trigger kept pet_tags");
}

#[tokio::test]
async fn an_endless_statement_stops_at_its_deadline_and_the_connection_serves_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _) = open_in(&dir).await;
    add_pet(&db).await;
    let endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";
    for sql in [endless.to_string(), format!("UPDATE pets SET name = name WHERE ({endless}) > 0")] {
        let started = std::time::Instant::now();
        let err = db.query(&component(Duration::from_millis(200)), &sql, vec![]).await.expect_err("stopped");
        assert!(matches!(&err, DbError::Busy(why) if why.contains("deadline")), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1), "stopped after {:?}", started.elapsed());
    }
    db.execute(&Caller::Host, "INSERT INTO filler (b) VALUES (x'00')", vec![]).await.expect("the writer is free");
    assert_eq!(count(&db, "filler").await, Value::Integer(1));
}

#[tokio::test]
async fn a_statement_abandoned_mid_way_keeps_its_own_deadline_and_frees_the_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _) = open_in(&dir).await;
    add_pet(&db).await;
    let db = Arc::new(db);
    let endless = "UPDATE pets SET name = name WHERE (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
                   SELECT count(*) FROM r) > 0";
    // The caller goes away long before the statement's deadline.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        db.execute(&component(Duration::from_millis(400)), endless, vec![]),
    )
    .await;
    assert!(abandoned.is_err(), "still running when abandoned");
    let started = std::time::Instant::now();
    db.execute(&Caller::Host, "INSERT INTO filler (b) VALUES (x'00')", vec![]).await.expect("the writer is free");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "the writer was held {waited:?}");
    assert_eq!(count(&db, "filler").await, Value::Integer(1));
}

#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_before_the_next_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, _) = open_in(&dir).await;
    let me = component(Duration::from_secs(5));
    let mut tx = db.begin(&me).await.expect("begin");
    tx.execute("DELETE FROM pets", vec![]).await.expect("its own table");
    let err = tx.execute("PRAGMA writable_schema = 1", vec![]).await.expect_err("refused in a transaction too");
    assert!(matches!(err, DbError::Forbidden(_)), "{err}");
    drop(tx);
    db.execute(&Caller::Host, "INSERT INTO filler (b) VALUES (x'00')", vec![]).await.expect("writes go on");
    assert_eq!(count(&db, "filler").await, Value::Integer(1));
}
