//! Concurrent state changes on one pet or one order: each pair of
//! transitions is raced many times, and every round must have exactly one
//! winner, the losers' documented answers, and a final state (order, pet,
//! inventory) that shows the winner's change made exactly once. Runs on
//! SQLite, and on PostgreSQL in scripts/test's second pass.

use futures::future::join_all;
use serde_json::{Value, json};
use crate::support::{Answer, Server};

/// Rounds per pair of transitions.
const ROUNDS: usize = 15;
/// Contenders per side in one round.
const EACH: usize = 6;

async fn pet(s: &Server) -> i64 {
    s.create_pet(&json!({"name": "Racer", "species": "dog"})).await
}

/// `ROUNDS` rounds, each on a new pet with a placed order:
/// `round(pet id, order id)`.
async fn each_placed_order(s: &Server, mut round: impl AsyncFnMut(i64, i64)) {
    for _ in 0..ROUNDS {
        let pet_id = pet(s).await;
        let a = s.post("/api/v1/orders", &json!({"pet_id": pet_id})).await;
        assert_eq!(a.status, 201, "{}", a.text);
        round(pet_id, a.body["id"].as_i64().expect("id")).await;
    }
}

/// `EACH` calls of `a` and `EACH` of `b`, all at once.
async fn race<FA, FB>(a: impl Fn() -> FA, b: impl Fn() -> FB) -> (Vec<Answer>, Vec<Answer>)
where
    FA: Future<Output = Answer>,
    FB: Future<Output = Answer>,
{
    futures::join!(join_all((0..EACH).map(|_| a())), join_all((0..EACH).map(|_| b())))
}

async fn deliver(s: &Server, order: i64) -> Answer {
    s.send("PATCH", &format!("/api/v1/orders/{order}"), &json!({"status": "delivered"})).await
}

async fn cancel(s: &Server, order: i64) -> Answer {
    s.delete(&format!("/api/v1/orders/{order}")).await
}

async fn delete_pet(s: &Server, pet_id: i64) -> Answer {
    s.delete(&format!("/api/v1/pets/{pet_id}")).await
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|a| a.status).collect()
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

/// Exactly one of `answers` is `won`, every other `lost`.
fn assert_one_winner(answers: &[Answer], won: u16, lost: u16) {
    let counts = (count(answers, won), count(answers, lost));
    assert_eq!(counts, (1, answers.len() - 1), "{:?}", statuses(answers));
}

async fn pet_status(s: &Server, pet_id: i64) -> Value {
    s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"].clone()
}

#[tokio::test]
async fn deliver_and_cancel_race_to_exactly_one_winner() {
    let s = Server::start();
    let (mut delivered, mut cancelled) = (0, 0);
    each_placed_order(&s, async |pet_id, order| {
        let (delivers, cancels) = race(|| deliver(&s, order), || cancel(&s, order)).await;
        let winners = count(&delivers, 200) + count(&cancels, 204);
        assert_eq!(winners, 1, "delivers {:?} cancels {:?}", statuses(&delivers), statuses(&cancels));
        let after = s.get(&format!("/api/v1/orders/{order}")).await;
        if count(&delivers, 200) == 1 {
            delivered += 1;
            // Once delivered, every cancel and every other delivery is a 409.
            assert!(delivers.iter().chain(&cancels).all(|a| a.status == 200 || a.status == 409));
            assert_eq!(after.body["status"], "delivered");
            assert_eq!(pet_status(&s, pet_id).await, "sold");
        } else {
            cancelled += 1;
            // Once cancelled, the order is gone: 404 for everyone else.
            assert!(delivers.iter().chain(&cancels).all(|a| a.status == 204 || a.status == 404));
            after.assert_error(404, "not_found");
            assert_eq!(pet_status(&s, pet_id).await, "available");
        }
    })
    .await;
    let inventory = s.get("/api/v1/store/inventory").await.body;
    assert_eq!(inventory, json!({"available": cancelled, "pending": 0, "sold": delivered}));
    println!("deliver/cancel: {delivered} delivered, {cancelled} cancelled");
}

#[tokio::test]
async fn concurrent_cancels_have_one_winner_and_404s() {
    let s = Server::start();
    each_placed_order(&s, async |pet_id, order| {
        assert_one_winner(&join_all((0..2 * EACH).map(|_| cancel(&s, order))).await, 204, 404);
        assert_eq!(pet_status(&s, pet_id).await, "available");
    })
    .await;
    assert_eq!(s.get("/api/v1/orders").await.body["total"], 0);
    assert_eq!(s.get("/api/v1/store/inventory").await.body["available"], ROUNDS);
}

#[tokio::test]
async fn concurrent_deliveries_have_one_winner_and_409s() {
    let s = Server::start();
    each_placed_order(&s, async |pet_id, order| {
        let delivers = join_all((0..2 * EACH).map(|_| deliver(&s, order))).await;
        assert_one_winner(&delivers, 200, 409);
        let conflict = delivers.iter().find(|a| a.status == 409).expect("a loser");
        conflict.assert_error(409, "conflict");
        assert_eq!(pet_status(&s, pet_id).await, "sold");
        let winner = delivers.iter().find(|a| a.status == 200).expect("a winner");
        let after = s.get(&format!("/api/v1/orders/{order}")).await;
        assert_eq!(after.body["updated_at"], winner.body["updated_at"], "no loser wrote after the winner");
    })
    .await;
    assert_eq!(s.get("/api/v1/store/inventory").await.body["sold"], ROUNDS);
}

#[tokio::test]
async fn deleting_a_pet_races_an_order_for_it_without_orphaning_the_order() {
    let s = Server::start();
    let (mut ordered, mut deleted) = (0, 0);
    for _ in 0..ROUNDS {
        let pet_id = pet(&s).await;
        let body = json!({"pet_id": pet_id});
        let (orders, deletes) = race(|| s.post("/api/v1/orders", &body), || delete_pet(&s, pet_id)).await;
        let pet = s.get(&format!("/api/v1/pets/{pet_id}")).await;
        if count(&deletes, 204) == 1 {
            deleted += 1;
            // The pet went first: every order found no pet.
            assert_eq!(count(&orders, 404), EACH, "orders {:?} deletes {:?}", statuses(&orders), statuses(&deletes));
            assert_eq!(count(&deletes, 404), EACH - 1);
            pet.assert_error(404, "not_found");
        } else {
            ordered += 1;
            // An order went first: exactly one, and the pet cannot be deleted.
            assert_one_winner(&orders, 201, 409);
            assert_eq!(count(&deletes, 409), EACH, "{:?}", statuses(&deletes));
            assert_eq!(pet.body["status"], "pending");
        }
    }
    // Never an order left behind for a pet that is gone.
    let orders = s.get("/api/v1/orders?limit=100").await.body;
    assert_eq!(orders["total"], ordered);
    assert!(orders["items"].as_array().expect("items").iter().all(|o| o["pet_id"].is_i64()), "{orders}");
    assert_eq!(s.get("/api/v1/pets").await.body["total"], ordered);
    println!("order/delete pet: {ordered} ordered, {deleted} deleted");
}

#[tokio::test]
async fn deleting_a_pet_races_the_delivery_of_its_order() {
    let s = Server::start();
    each_placed_order(&s, async |pet_id, order| {
        let (delivers, deletes) = race(|| deliver(&s, order), || delete_pet(&s, pet_id)).await;
        assert_eq!(count(&delivers, 200), 1, "{:?}", statuses(&delivers));
        let order_after = s.get(&format!("/api/v1/orders/{order}")).await;
        assert_eq!(order_after.body["status"], "delivered", "the delivery is never lost");
        match count(&deletes, 204) {
            // The delivery committed first: the pet could go, the order stays.
            1 => {
                assert!(order_after.body["pet_id"].is_null());
                s.get(&format!("/api/v1/pets/{pet_id}")).await.assert_error(404, "not_found");
            }
            0 => {
                assert_eq!(count(&deletes, 409), EACH, "{:?}", statuses(&deletes));
                assert_eq!(pet_status(&s, pet_id).await, "sold");
            }
            n => panic!("{n} deletes won: {:?}", statuses(&deletes)),
        }
    })
    .await;
}

#[tokio::test]
async fn orders_for_the_last_available_pet_race_to_one_winner() {
    let s = Server::start();
    for _ in 0..ROUNDS {
        let pet_id = pet(&s).await;
        let body = json!({"pet_id": pet_id});
        let orders = join_all((0..2 * EACH).map(|_| s.post("/api/v1/orders", &body))).await;
        assert_one_winner(&orders, 201, 409);
        orders.iter().find(|a| a.status == 409).expect("a loser").assert_error(409, "conflict");
        assert_eq!(pet_status(&s, pet_id).await, "pending");
    }
    assert_eq!(s.get("/api/v1/orders").await.body["total"], ROUNDS);
    assert_eq!(s.get("/api/v1/store/inventory").await.body, json!({"available": 0, "pending": ROUNDS, "sold": 0}));
}

#[tokio::test]
async fn concurrent_patches_of_one_pet_lose_no_field() {
    let s = Server::start();
    for _ in 0..ROUNDS {
        let pet_id = s.create_pet(&json!({"name": "Start", "species": "dog", "tags": ["a"]})).await;
        let path = format!("/api/v1/pets/{pet_id}");
        // Each patch changes a different field; all must survive.
        let patches = [
            json!({"name": "Renamed"}),
            json!({"species": "cat"}),
            json!({"tags": ["b", "c"]}),
            json!({"status": "sold"}),
        ];
        let answers = join_all(patches.iter().map(|p| s.send("PATCH", &path, p))).await;
        assert!(answers.iter().all(|a| a.status == 200), "{:?}", statuses(&answers));
        let pet = s.get(&path).await.body;
        assert_eq!(
            (&pet["name"], &pet["species"], &pet["tags"], &pet["status"]),
            (&json!("Renamed"), &json!("cat"), &json!(["b", "c"]), &json!("sold")),
            "{pet}"
        );
    }
    assert_eq!(s.get("/api/v1/pets?tag=b").await.body["total"], ROUNDS, "the tag index agrees");
    assert_eq!(s.get("/api/v1/pets?tag=a").await.body["total"], 0);
}
