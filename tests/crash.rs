//! A crash loses nothing acknowledged: under a write load the host is killed
//! with SIGKILL, and after a restart on the same database every create and
//! update that was answered 2xx is there. A write in flight at the kill may
//! or may not have landed, but never half (a pet with its tags, an order
//! with its pet's status, a write with its counts). Runs on SQLite, and on PostgreSQL in
//! scripts/test's second pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use crate::support::{Server, eventually};

/// Writers running at once.
const WRITERS: usize = 8;

/// What one writer was told, and what it was doing when the host died.
#[derive(Default)]
struct Ledger {
    /// Pet id → the name its last acknowledged write gave it.
    acknowledged: HashMap<i64, String>,
    /// Pet id → a name written but not acknowledged (in flight at the kill).
    in_flight: HashMap<i64, String>,
    /// Orders acknowledged: order id → pet id.
    orders: HashMap<i64, i64>,
}

/// Create a pet, rename it a few times, order it; record every answer.
async fn write_until_refused(client: reqwest::Client, base: String, writer: usize, ledger: Arc<Mutex<Ledger>>) {
    for round in 0.. {
        let name = format!("w{writer}-r{round}-v0");
        let created = client
            .post(format!("{base}/api/v1/pets"))
            .json(&json!({"name": name, "species": "dog", "tags": [format!("w{writer}"), format!("r{round}")]}))
            .send()
            .await;
        let Ok(created) = created else { return };
        if created.status() != 201 {
            return;
        }
        let Ok(pet) = created.json::<Value>().await else { return };
        let Some(id) = pet["id"].as_i64() else { return };
        ledger.lock().unwrap().acknowledged.insert(id, name);
        for version in 1..=3 {
            let name = format!("w{writer}-r{round}-v{version}");
            ledger.lock().unwrap().in_flight.insert(id, name.clone());
            let updated = client.patch(format!("{base}/api/v1/pets/{id}")).json(&json!({"name": name})).send().await;
            match updated {
                Ok(answer) if answer.status() == 200 => {
                    let mut ledger = ledger.lock().unwrap();
                    ledger.in_flight.remove(&id);
                    ledger.acknowledged.insert(id, name);
                }
                _ => return,
            }
        }
        let ordered = client.post(format!("{base}/api/v1/orders")).json(&json!({"pet_id": id})).send().await;
        match ordered {
            Ok(answer) if answer.status() == 201 => {
                let Ok(order) = answer.json::<Value>().await else { return };
                if let Some(order_id) = order["id"].as_i64() {
                    ledger.lock().unwrap().orders.insert(order_id, id);
                }
            }
            _ => return,
        }
    }
}

#[tokio::test]
async fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let first = Server::start();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write_until_refused(reqwest::Client::new(), first.base.clone(), w, ledger.clone())))
        .collect();
    // Let the load build up: wait until plenty of writes were acknowledged.
    eventually("40 acknowledged orders", Duration::from_secs(30), || async {
        (ledger.lock().unwrap().orders.len() >= 40).then_some(())
    })
    .await;
    let killed = std::process::Command::new("kill").args(["-KILL", &first.pid().to_string()]).status().expect("kill");
    assert!(killed.success());
    for writer in writers {
        writer.await.expect("writer");
    }

    let second = Server::builder().data_of(&first).start();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    for (id, name) in &ledger.acknowledged {
        let pet = second.get(&format!("/api/v1/pets/{id}")).await;
        assert_eq!(pet.status, 200, "acknowledged pet {id} is gone");
        let stored = pet.body["name"].as_str().unwrap_or_default();
        let in_flight = ledger.in_flight.get(id).map(String::as_str);
        assert!(
            stored == name || Some(stored) == in_flight,
            "pet {id} is {stored:?}: acknowledged {name:?}, in flight {in_flight:?}"
        );
        // Never half a write: the tag index agrees with the pet.
        let tag = pet.body["tags"][0].as_str().unwrap_or_default().to_string();
        let tagged = second.get(&format!("/api/v1/pets?tag={tag}&limit=100")).await.body;
        assert!(tagged["items"].as_array().is_some_and(|items| items.iter().any(|p| p["id"] == *id)));
    }
    for (order, pet) in &ledger.orders {
        let stored = second.get(&format!("/api/v1/orders/{order}")).await;
        assert_eq!((stored.status, &stored.body["pet_id"]), (200, &json!(pet)), "acknowledged order {order}");
        assert_eq!(second.get(&format!("/api/v1/pets/{pet}")).await.body["status"], "pending");
    }
    // Every order that exists took its pet: none without the other.
    let inventory = second.get("/api/v1/store/inventory").await.body;
    let orders = second.get("/api/v1/orders").await.body["total"].as_i64().unwrap_or(-1);
    assert_eq!(inventory["pending"].as_i64(), Some(orders), "{inventory}");
    // The counts behind every total and the inventory were written with
    // their rows: none is off by what was in flight.
    crate::counts::assert_counts_exact(&second).await;
    println!(
        "killed under load: {} pets and {} orders acknowledged, all there ({} writes were in flight)",
        ledger.acknowledged.len(),
        ledger.orders.len(),
        ledger.in_flight.len()
    );
}
