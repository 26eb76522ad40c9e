//! Every list the API offers reads its page through an index: for each
//! filter, the statement the components send for a cursor page (`id >
//! after`) is planned by the real database (SQLite's `EXPLAIN QUERY PLAN`,
//! PostgreSQL's `EXPLAIN` with sequential scans and sorts priced out) as an
//! index seek on the filter and the id, in id order: no scan of the table,
//! no sort, so a page deep in the list costs what the first does. (`total`
//! is still a count of the matching rows: docs/api.md says what it costs.)

use serde_json::json;
use sqlx::Connection;

use crate::support::Server;

const PET_COLUMNS: &str = "id, name, species, tags, status, created_at, updated_at";

/// (what, statement, what the plan must seek on).
fn cursor_pages() -> Vec<(&'static str, String, &'static [&'static str])> {
    let page = |filter: &str| format!("SELECT {PET_COLUMNS} FROM pets WHERE {filter} ORDER BY id LIMIT 21");
    vec![
        ("pets", page("id > 100"), &["id"]),
        ("pets by status", page("status = 'sold' AND id > 100"), &["status", "id"]),
        ("pets by species", page("species = 'cat' AND id > 100"), &["species", "id"]),
        (
            "pets by tag",
            page("EXISTS (SELECT 1 FROM pet_tags t WHERE t.pet_id = pets.id AND t.tag = 'x' AND t.pet_id > 100) AND id > 100"),
            &["id"],
        ),
        (
            "orders",
            "SELECT id, pet_id, quantity, status, created_at, updated_at FROM orders WHERE id > 100 ORDER BY id LIMIT 21"
                .into(),
            &["id"],
        ),
        (
            "orders by status",
            "SELECT id, pet_id, quantity, status, created_at, updated_at FROM orders \
             WHERE status = 'placed' AND id > 100 ORDER BY id LIMIT 21"
                .into(),
            &["status", "id"],
        ),
    ]
}

/// SQLite's plan: each table searched (never scanned) with the keys, and no
/// temporary b-tree for the order.
async fn sqlite_plans(url: &str) {
    let mut db = sqlx::SqliteConnection::connect(url).await.expect("the server's SQLite file");
    for (what, sql, keys) in cursor_pages() {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"))).fetch_all(&mut db).await.expect(what);
        let plan: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        assert!(!plan.iter().any(|step| step.starts_with("SCAN")), "{what} scans a table: {plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{what} sorts: {plan:?}");
        let first = plan.first().copied().unwrap_or_default();
        for key in keys {
            // SQLite calls the id the rowid (it is the INTEGER PRIMARY KEY).
            let key = if *key == "id" { "rowid>?" } else { key };
            assert!(first.contains(key), "{what} does not seek on {key}: {plan:?}");
        }
        if what == "pets by tag" {
            assert!(plan.iter().any(|s| s.starts_with("SEARCH t ") && s.contains("INDEX")), "the tag lookup is not by index: {plan:?}");
        }
    }
}

/// PostgreSQL's plan with sequential scans and sorts priced out: an index
/// scan whose condition holds the filter and the cursor, and no sort.
fn postgres_plans(url: &str) {
    for (what, sql, keys) in cursor_pages() {
        let settings = "SET enable_seqscan = off; SET enable_sort = off; SET enable_bitmapscan = off;";
        let out = std::process::Command::new("psql")
            .arg(url)
            .args(["-qtAc", &format!("{settings} EXPLAIN (FORMAT JSON) {sql}")])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let plan: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        assert!(!text.contains("\"Seq Scan\""), "{what} scans a table: {text}");
        assert!(!text.contains("\"Sort\""), "{what} sorts: {text}");
        let outer = scan_of(&plan[0]["Plan"]).unwrap_or_else(|| panic!("{what}: no index scan in {text}"));
        let condition = outer["Index Cond"].as_str().unwrap_or_default();
        for key in keys {
            assert!(condition.contains(&format!("{key} ")), "{what} does not seek on {key}: {text}");
        }
        if what == "pets by tag" {
            // Driven from the tag's index, from the cursor on.
            let tags = index_scans(&plan[0]["Plan"]).into_iter().find(|n| n["Relation Name"] == "pet_tags");
            let condition = tags.and_then(|n| n["Index Cond"].as_str()).unwrap_or_default().to_string();
            assert!(condition.contains("tag = ") && condition.contains("pet_id > "), "{what}: {text}");
        }
    }
}

/// The first index scan on the page's table, depth first.
fn scan_of(node: &serde_json::Value) -> Option<&serde_json::Value> {
    index_scans(node).into_iter().find(|n| n["Relation Name"] != "pet_tags")
}

/// Every index scan of a plan, depth first.
fn index_scans(node: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut found = Vec::new();
    if node["Node Type"].as_str().is_some_and(|t| t.starts_with("Index")) {
        found.push(node);
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        found.extend(index_scans(child));
    }
    found
}

#[tokio::test]
async fn every_list_reads_a_cursor_page_through_an_index_in_order() {
    let s = Server::start();
    // A few rows, written through the API; the plans do not depend on them.
    let pet = s.create_pet(&json!({"name": "Rex", "species": "dog", "tags": ["x"]})).await;
    assert_eq!(s.post("/api/v1/orders", &json!({"pet_id": pet})).await.status, 201);
    if s.database_url.starts_with("postgres") {
        postgres_plans(&s.database_url);
    } else {
        sqlite_plans(&s.database_url).await;
    }
    // Nothing the test did changed the data.
    assert_eq!(s.get(&format!("/api/v1/pets/{pet}")).await.body["name"], "Rex");
}
