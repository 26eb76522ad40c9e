//! `total` and the inventory come from counts the database's triggers keep
//! in the transaction of each write (pets by status, by species and status;
//! orders by status): they stay exact under concurrent creates, status
//! changes, orders and deletes, on SQLite and on PostgreSQL (whose counts
//! are spread over shards), and after a crash (`crash.rs` checks them too).

use std::collections::HashMap;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::support::Server;

/// Every row of a list, walked through its `next` links.
async fn every(s: &Server, path: &str) -> Vec<Value> {
    let mut url = Some(format!("{path}?limit=100"));
    let mut all = Vec::new();
    while let Some(next) = url {
        let page = s.get(&next).await;
        assert_eq!(page.status, 200, "{next}: {}", page.text);
        all.extend(page.body["items"].as_array().cloned().unwrap_or_default());
        url = page
            .header("link")
            .and_then(|l| l.strip_prefix('<'))
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(u, _)| u.to_string());
    }
    all
}

async fn total(s: &Server, path: &str) -> i64 {
    let page = s.get(path).await;
    assert_eq!(page.status, 200, "{path}: {}", page.text);
    page.body["total"].as_i64().unwrap_or(-1)
}

/// Every total the counts give equals the rows, counted here.
pub async fn assert_counts_exact(s: &Server) {
    let pets = every(s, "/api/v1/pets").await;
    let field = |p: &Value, f: &str| p[f].as_str().unwrap_or_default().to_string();
    let mut by_status: HashMap<String, i64> = HashMap::new();
    let mut by_species: HashMap<(String, String), i64> = HashMap::new();
    for p in &pets {
        *by_status.entry(field(p, "status")).or_default() += 1;
        *by_species.entry((field(p, "species"), field(p, "status"))).or_default() += 1;
    }
    assert_eq!(total(s, "/api/v1/pets").await, pets.len() as i64, "all pets");
    let inventory = s.get("/api/v1/store/inventory").await.body;
    for status in ["available", "pending", "sold"] {
        let rows = by_status.get(status).copied().unwrap_or(0);
        assert_eq!(total(s, &format!("/api/v1/pets?status={status}")).await, rows, "{status} pets");
        assert_eq!(inventory[status].as_i64(), Some(rows), "inventory {status}: {inventory}");
    }
    let species: std::collections::BTreeSet<String> = by_species.keys().map(|(sp, _)| sp.clone()).collect();
    for sp in species {
        let rows: i64 = by_species.iter().filter(|((s2, _), _)| *s2 == sp).map(|(_, n)| n).sum();
        assert_eq!(total(s, &format!("/api/v1/pets?species={sp}")).await, rows, "{sp}");
        for status in ["available", "pending", "sold"] {
            let rows = by_species.get(&(sp.clone(), status.to_string())).copied().unwrap_or(0);
            assert_eq!(total(s, &format!("/api/v1/pets?species={sp}&status={status}")).await, rows, "{sp} {status}");
        }
    }
    let orders = every(s, "/api/v1/orders").await;
    assert_eq!(total(s, "/api/v1/orders").await, orders.len() as i64, "all orders");
    for status in ["placed", "approved", "delivered"] {
        let rows = orders.iter().filter(|o| o["status"] == status).count() as i64;
        assert_eq!(total(s, &format!("/api/v1/orders?status={status}")).await, rows, "{status} orders");
    }
}

/// pet_tags holds the tags of the pets there are, and nothing else (the
/// triggers keep it as pets are written and deleted), read through the
/// test component that runs SQL.
async fn assert_tags_in_step(s: &Server) {
    let pets = every(s, "/api/v1/pets").await;
    let mut by_tag: HashMap<String, i64> = HashMap::new();
    for tag in pets.iter().flat_map(|p| p["tags"].as_array().cloned().unwrap_or_default()) {
        *by_tag.entry(tag.as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    for (tag, pets) in &by_tag {
        assert_eq!(total(s, &format!("/api/v1/pets?tag={tag}")).await, *pets, "pets tagged {tag}");
    }
    let count = |sql: &'static str| async move {
        let answer = s.post("/api/v1/misbehave/sql", &json!({"statements": [{"sql": sql, "query": true}]})).await;
        assert_eq!(answer.status, 200, "{sql}: {}", answer.text);
        answer.body["rows"][0][0].as_i64().unwrap_or(-1)
    };
    assert_eq!(count("SELECT count(*) FROM pet_tags").await, by_tag.values().sum::<i64>(), "one row per tag of a pet");
    let orphans = count("SELECT count(*) FROM pet_tags t WHERE NOT EXISTS (SELECT 1 FROM pets p WHERE p.id = t.pet_id)");
    assert_eq!(orphans.await, 0, "no row of a deleted pet");
}

#[tokio::test]
async fn totals_and_the_inventory_stay_exact_under_concurrent_writes() {
    let s = Server::builder().with_misbehave().start();
    let species = ["cat", "dog", "parrot"];
    // 60 pets made by 12 clients at once.
    let made = join_all((0..60).map(|i| {
        let s = &s;
        async move {
            let body = json!({"name": format!("p{i}"), "species": species[i % 3], "tags": ["t"]});
            s.create_pet(&body).await
        }
    }))
    .await;
    assert_counts_exact(&s).await;
    // Then, all at once: status changes, orders (their pets go pending),
    // order changes, deletes, and more creates.
    let writes = made.iter().enumerate().map(|(i, &id)| {
        let s = &s;
        async move {
            match i % 5 {
                0 => {
                    s.send("PATCH", &format!("/api/v1/pets/{id}"), &json!({"status": "sold"})).await;
                }
                1 => {
                    let order = s.post("/api/v1/orders", &json!({"pet_id": id})).await;
                    if let Some(order) = order.body["id"].as_i64() {
                        s.send("PATCH", &format!("/api/v1/orders/{order}"), &json!({"status": "approved"})).await;
                    }
                }
                2 => {
                    s.delete(&format!("/api/v1/pets/{id}")).await;
                }
                3 => {
                    let tags = if i % 2 == 0 { json!([]) } else { json!(["u", "t"]) };
                    let body = json!({"name": "moved", "species": "ferret", "tags": tags});
                    s.send("PUT", &format!("/api/v1/pets/{id}"), &body).await;
                }
                _ => {
                    s.create_pet(&json!({"name": "late", "species": species[i % 3]})).await;
                }
            }
        }
    });
    join_all(writes).await;
    assert_counts_exact(&s).await;
    assert_tags_in_step(&s).await;
    // The pets written before are all there: 60 made, 12 deleted, 12 more made.
    assert_eq!(total(&s, "/api/v1/pets").await, 60);
    assert_eq!(total(&s, "/api/v1/pets?species=ferret").await, 12);
}
