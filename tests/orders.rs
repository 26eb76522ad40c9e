//! `/api/v1/orders` and `/api/v1/store/inventory` end to end, with the
//! transactional rules of docs/api.md.

use serde_json::json;
use crate::support::Server;

async fn pet(s: &Server) -> i64 {
    s.create_pet(&json!({"name": "Rex", "species": "dog"})).await
}

async fn place(s: &Server, pet_id: i64) -> i64 {
    let a = s.post("/api/v1/orders", &json!({"pet_id": pet_id})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["id"].as_i64().unwrap()
}

#[tokio::test]
async fn placing_an_order_makes_the_pet_pending() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    let a = s.post("/api/v1/orders", &json!({"pet_id": pet_id, "quantity": 2, "status": "delivered"})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_i64().unwrap();
    assert_eq!(a.header("location"), Some(format!("/api/v1/orders/{id}").as_str()));
    assert_eq!(a.body["status"], "placed", "a new order always starts placed");
    assert_eq!(a.body["quantity"], 2);
    assert_eq!(a.body["pet_id"], pet_id);
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "pending");
    assert_eq!(s.get(&format!("/api/v1/orders/{id}")).await.body, a.body);
}

#[tokio::test]
async fn an_order_needs_an_existing_available_pet() {
    let s = Server::start();
    s.post("/api/v1/orders", &json!({"pet_id": 4242})).await.assert_error(404, "not_found");
    let sold = s.create_pet(&json!({"name": "a", "species": "b", "status": "sold"})).await;
    s.post("/api/v1/orders", &json!({"pet_id": sold})).await.assert_error(409, "conflict");
    assert_eq!(s.get(&format!("/api/v1/pets/{sold}")).await.body["status"], "sold", "a refused order changes nothing");
    assert_eq!(s.get("/api/v1/orders").await.body["total"], 0);
}

#[tokio::test]
async fn order_fields_are_validated() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    for body in [
        json!({}),
        json!({"pet_id": "1"}),
        json!({"pet_id": 0}),
        json!({"pet_id": pet_id, "quantity": 0}),
        json!({"pet_id": pet_id, "quantity": 101}),
        json!({"pet_id": pet_id, "quantity": 1.5}),
    ] {
        s.post("/api/v1/orders", &body).await.assert_error(422, "validation_failed");
    }
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "available");
    let a = s.post("/api/v1/orders", &json!({"pet_id": pet_id, "quantity": 100})).await;
    assert_eq!(a.status, 201);
}

#[tokio::test]
async fn orders_for_one_pet_race_to_exactly_one_winner() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    let body = json!({"pet_id": pet_id});
    let attempts = (0..20).map(|_| s.post("/api/v1/orders", &body));
    let answers = futures::future::join_all(attempts).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let conflicts = answers.iter().filter(|a| a.status == 409).count();
    assert_eq!((created, conflicts), (1, 19), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "pending");
    assert_eq!(s.get("/api/v1/orders").await.body["total"], 1);
}

#[tokio::test]
async fn status_only_moves_forward_and_delivery_sells_the_pet() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    let id = place(&s, pet_id).await;
    let path = format!("/api/v1/orders/{id}");
    let a = s.send("PATCH", &path, &json!({"status": "approved"})).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("approved")), "{}", a.text);
    s.send("PATCH", &path, &json!({"status": "placed"})).await.assert_error(409, "conflict");
    s.send("PATCH", &path, &json!({"status": "approved"})).await.assert_error(409, "conflict");
    s.send("PATCH", &path, &json!({"status": "shipped"})).await.assert_error(422, "validation_failed");
    s.send("PATCH", &path, &json!({})).await.assert_error(422, "validation_failed");
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "pending");
    let d = s.send("PATCH", &path, &json!({"status": "delivered"})).await;
    assert_eq!(d.status, 200);
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "sold");
    s.send("PATCH", &path, &json!({"status": "approved"})).await.assert_error(409, "conflict");
    s.send("PATCH", "/api/v1/orders/999", &json!({"status": "approved"})).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn placed_can_go_straight_to_delivered() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    let id = place(&s, pet_id).await;
    let a = s.send("PATCH", &format!("/api/v1/orders/{id}"), &json!({"status": "delivered"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "sold");
}

#[tokio::test]
async fn cancelling_returns_the_pet_and_delivered_orders_stay() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    let id = place(&s, pet_id).await;
    let a = s.delete(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(a.status, 204);
    s.get(&format!("/api/v1/orders/{id}")).await.assert_error(404, "not_found");
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.body["status"], "available");
    s.delete(&format!("/api/v1/orders/{id}")).await.assert_error(404, "not_found");

    let again = place(&s, pet_id).await;
    s.send("PATCH", &format!("/api/v1/orders/{again}"), &json!({"status": "delivered"})).await;
    s.delete(&format!("/api/v1/orders/{again}")).await.assert_error(409, "conflict");
    assert_eq!(s.get(&format!("/api/v1/orders/{again}")).await.status, 200, "a refused cancel keeps the order");
}

#[tokio::test]
async fn a_pet_with_an_open_order_cannot_be_deleted() {
    let s = Server::start();
    let pet_id = pet(&s).await;
    let id = place(&s, pet_id).await;
    s.delete(&format!("/api/v1/pets/{pet_id}")).await.assert_error(409, "conflict");
    assert_eq!(s.get(&format!("/api/v1/pets/{pet_id}")).await.status, 200);
    s.send("PATCH", &format!("/api/v1/orders/{id}"), &json!({"status": "delivered"})).await;
    assert_eq!(s.delete(&format!("/api/v1/pets/{pet_id}")).await.status, 204, "delivered orders do not block");
    let order = s.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(order.status, 200, "the order history stays");
    assert!(order.body["pet_id"].is_null());
}

#[tokio::test]
async fn order_lists_page_and_filter_by_status() {
    let s = Server::start();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let p = pet(&s).await;
        ids.push(place(&s, p).await);
    }
    s.send("PATCH", &format!("/api/v1/orders/{}", ids[1]), &json!({"status": "approved"})).await;
    let page = s.get("/api/v1/orders?limit=2").await;
    assert_eq!((page.body["total"].as_i64(), page.body["items"].as_array().unwrap().len()), (Some(3), 2));
    let next = format!("</api/v1/orders?limit=2&offset=2&after={}>; rel=\"next\"", ids[1]);
    assert_eq!(page.header("link"), Some(next.as_str()));
    let rest = s.get(&format!("/api/v1/orders?limit=2&offset=2&after={}", ids[1])).await;
    assert_eq!(rest.body["items"].as_array().unwrap().iter().map(|o| o["id"].clone()).collect::<Vec<_>>(), vec![json!(ids[2])]);
    assert_eq!(rest.header("link"), None);
    let approved = s.get("/api/v1/orders?status=approved").await;
    assert_eq!(approved.body["total"], 1);
    assert_eq!(approved.body["items"][0]["id"], ids[1]);
    for bad in ["/api/v1/orders?status=lost", "/api/v1/orders?limit=0", "/api/v1/orders/x"] {
        s.get(bad).await.assert_error(400, "invalid_parameter");
    }
}

#[tokio::test]
async fn inventory_counts_pets_by_status() {
    let s = Server::start();
    assert_eq!(s.get("/api/v1/store/inventory").await.body, json!({"available": 0, "pending": 0, "sold": 0}));
    let a = pet(&s).await;
    pet(&s).await;
    s.create_pet(&json!({"name": "s", "species": "d", "status": "sold"})).await;
    place(&s, a).await;
    let inv = s.get("/api/v1/store/inventory").await;
    assert_eq!(inv.status, 200);
    assert_eq!(inv.body, json!({"available": 1, "pending": 1, "sold": 1}));
    s.post("/api/v1/store/inventory", &json!({})).await.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn unknown_methods_get_405_with_allow() {
    let s = Server::start();
    let a = s.send("PUT", "/api/v1/orders", &json!({})).await;
    a.assert_error(405, "method_not_allowed");
    assert_eq!(a.header("allow"), Some("GET, POST"));
    let b = s.send("PUT", "/api/v1/orders/1", &json!({})).await;
    b.assert_error(405, "method_not_allowed");
    assert_eq!(b.header("allow"), Some("GET, PATCH, DELETE"));
    let c = s.delete("/api/v1/pets").await;
    c.assert_error(405, "method_not_allowed");
    assert_eq!(c.header("allow"), Some("GET, POST"));
}
