//! `/api/v1/pets` end to end: every call, status and edge case of the contract (the OpenAPI document and docs/api.md).

use serde_json::{Value, json};
use crate::support::Server;

#[tokio::test]
async fn create_then_read_back_with_server_fields() {
    let s = Server::start();
    let a = s
        .post(
            "/api/v1/pets",
            &json!({"name": " Rex ", "species": "dog", "tags": ["friendly"], "id": 99, "created_at": "x"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_i64().unwrap();
    assert_ne!(id, 99, "a client id is ignored");
    assert_eq!(a.header("location"), Some(format!("/api/v1/pets/{id}").as_str()));
    assert_eq!(a.body["name"], "Rex", "names are trimmed");
    assert_eq!(a.body["status"], "available");
    assert_eq!(a.body["tags"], json!(["friendly"]));
    let created = a.body["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "RFC 3339 UTC: {created}");
    assert_eq!(a.body["created_at"], a.body["updated_at"]);

    let got = s.get(&format!("/api/v1/pets/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, a.body);
}

#[tokio::test]
async fn defaults_apply_when_tags_and_status_are_left_out() {
    let s = Server::start();
    let a = s.post("/api/v1/pets", &json!({"name": "Tom", "species": "cat"})).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["tags"], json!([]));
    assert_eq!(a.body["status"], "available");
}

#[tokio::test]
async fn validation_names_every_bad_field() {
    let s = Server::start();
    let keep = s.create_pet(&json!({"name": "Keep", "species": "dog"})).await;
    let a =
        s.post("/api/v1/pets", &json!({"name": "", "species": "x".repeat(51), "status": "lost", "tags": "a"})).await;
    a.assert_error(422, "validation_failed");
    let fields: Vec<&str> =
        a.body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    for f in ["name", "species", "status", "tags"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let missing = s.post("/api/v1/pets", &json!({})).await;
    missing.assert_error(422, "validation_failed");
    assert_eq!(missing.body["error"]["details"].as_array().unwrap().len(), 2);
    // Nothing written before the failures is lost, and nothing was added.
    let list = s.get("/api/v1/pets").await;
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["id"], keep);
}

#[tokio::test]
async fn lengths_count_characters_after_trimming() {
    let s = Server::start();
    let a = s.post("/api/v1/pets", &json!({"name": "é".repeat(100), "species": "  cat  "})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["species"], "cat");
    s.post("/api/v1/pets", &json!({"name": "é".repeat(101), "species": "cat"}))
        .await
        .assert_error(422, "validation_failed");
    s.post("/api/v1/pets", &json!({"name": "   ", "species": "cat"})).await.assert_error(422, "validation_failed");
}

#[tokio::test]
async fn tag_rules_limit_count_length_and_duplicates() {
    let s = Server::start();
    let ten: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    assert_eq!(s.post("/api/v1/pets", &json!({"name": "a", "species": "b", "tags": ten})).await.status, 201);
    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    s.post("/api/v1/pets", &json!({"name": "a", "species": "b", "tags": eleven}))
        .await
        .assert_error(422, "validation_failed");
    s.post("/api/v1/pets", &json!({"name": "a", "species": "b", "tags": ["x".repeat(31)]}))
        .await
        .assert_error(422, "validation_failed");
    s.post("/api/v1/pets", &json!({"name": "a", "species": "b", "tags": ["dup", "dup"]}))
        .await
        .assert_error(422, "validation_failed");
    s.post("/api/v1/pets", &json!({"name": "a", "species": "b", "tags": [1]}))
        .await
        .assert_error(422, "validation_failed");
    let case = s.post("/api/v1/pets", &json!({"name": "a", "species": "b", "tags": ["Dup", "dup"]})).await;
    assert_eq!(case.status, 201, "tags compare case-sensitively: {}", case.text);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects() {
    let s = Server::start();
    let raw = |body: &'static str| {
        s.client.post(s.url("/api/v1/pets")).header("content-type", "application/json").body(body).send()
    };
    crate::support::Answer::read(raw("{not json").await.unwrap()).await.assert_error(400, "invalid_json");
    crate::support::Answer::read(raw("").await.unwrap()).await.assert_error(400, "invalid_json");
    for body in ["[]", "\"x\"", "null", "3"] {
        crate::support::Answer::read(raw(body).await.unwrap()).await.assert_error(422, "validation_failed");
    }
}

#[tokio::test]
async fn path_ids_must_be_positive_64_bit_integers() {
    let s = Server::start();
    for id in ["abc", "1.5", "1e3", "0", "-1", "99999999999999999999", "%20"] {
        let a = s.get(&format!("/api/v1/pets/{id}")).await;
        assert!((400..500).contains(&a.status), "{id}: {}", a.status);
        assert!(a.body["error"]["code"].is_string(), "{id}: {}", a.text);
    }
    s.get("/api/v1/pets/abc").await.assert_error(400, "invalid_parameter");
    s.get("/api/v1/pets/424242").await.assert_error(404, "not_found");
    s.get("/api/v1/pets/1/extra").await.assert_error(404, "not_found");
}

#[tokio::test]
async fn put_replaces_everything_and_resets_omitted_fields() {
    let s = Server::start();
    let id = s.create_pet(&json!({"name": "Rex", "species": "dog", "tags": ["a", "b"], "status": "pending"})).await;
    let a = s.send("PUT", &format!("/api/v1/pets/{id}"), &json!({"name": "Max", "species": "wolf"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["name"], "Max");
    assert_eq!(a.body["tags"], json!([]));
    assert_eq!(a.body["status"], "available");
    assert_eq!(s.get("/api/v1/pets?tag=a").await.body["total"], 0, "old tags are gone from the index");
    s.send("PUT", "/api/v1/pets/9999", &json!({"name": "x", "species": "y"})).await.assert_error(404, "not_found");
    s.send("PUT", &format!("/api/v1/pets/{id}"), &json!({"name": "x"})).await.assert_error(422, "validation_failed");
    assert_eq!(s.get(&format!("/api/v1/pets/{id}")).await.body["name"], "Max", "a refused PUT changes nothing");
}

#[tokio::test]
async fn patch_merges_and_refuses_null_for_required_fields() {
    let s = Server::start();
    let id = s.create_pet(&json!({"name": "Rex", "species": "dog", "tags": ["a"]})).await;
    let path = format!("/api/v1/pets/{id}");
    let a = s.send("PATCH", &path, &json!({"status": "sold"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!((a.body["name"].as_str(), a.body["status"].as_str()), (Some("Rex"), Some("sold")));
    assert_eq!(a.body["tags"], json!(["a"]), "fields not in the patch stay");

    let merge = s
        .client
        .patch(s.url(&path))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"tags": ["b", "c"]}).to_string())
        .send()
        .await
        .unwrap();
    let merge = crate::support::Answer::read(merge).await;
    assert_eq!(merge.status, 200, "{}", merge.text);
    assert_eq!(merge.body["tags"], json!(["b", "c"]));

    s.send("PATCH", &path, &json!({"name": null})).await.assert_error(422, "validation_failed");
    s.send("PATCH", &path, &json!({"species": ""})).await.assert_error(422, "validation_failed");
    s.send("PATCH", "/api/v1/pets/9999", &json!({"name": "x"})).await.assert_error(404, "not_found");
    let after = s.get(&path).await;
    assert_eq!(after.body["name"], "Rex", "refused patches change nothing");
    assert_eq!(after.body["tags"], json!(["b", "c"]));
}

#[tokio::test]
async fn delete_removes_the_pet() {
    let s = Server::start();
    let id = s.create_pet(&json!({"name": "Rex", "species": "dog"})).await;
    let other = s.create_pet(&json!({"name": "Tom", "species": "cat"})).await;
    let a = s.delete(&format!("/api/v1/pets/{id}")).await;
    assert_eq!(a.status, 204);
    assert!(a.text.is_empty());
    s.get(&format!("/api/v1/pets/{id}")).await.assert_error(404, "not_found");
    s.delete(&format!("/api/v1/pets/{id}")).await.assert_error(404, "not_found");
    assert_eq!(s.get(&format!("/api/v1/pets/{other}")).await.status, 200);
}

#[tokio::test]
async fn paging_is_ordered_and_links_the_next_page_with_filters() {
    let s = Server::start();
    for i in 0..7 {
        let species = if i % 2 == 0 { "dog" } else { "cat" };
        s.create_pet(&json!({"name": format!("p{i}"), "species": species})).await;
    }
    let a = s.get("/api/v1/pets?limit=3").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        (a.body["total"].as_i64(), a.body["limit"].as_i64(), a.body["offset"].as_i64()),
        (Some(7), Some(3), Some(0))
    );
    let ids: Vec<i64> = a.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ordered by id: {ids:?}");
    let next = format!("</api/v1/pets?limit=3&offset=3&after={}>; rel=\"next\"", ids[2]);
    assert_eq!(a.header("link"), Some(next.as_str()));

    let last = s.get("/api/v1/pets?limit=3&offset=6").await;
    assert_eq!(last.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(last.header("link"), None, "no next link on the last page");

    let dogs = s.get("/api/v1/pets?species=dog&limit=2").await;
    assert_eq!(dogs.body["total"], 4);
    let second_dog = dogs.body["items"][1]["id"].as_i64().unwrap();
    let next = format!("</api/v1/pets?species=dog&limit=2&offset=2&after={second_dog}>; rel=\"next\"");
    assert_eq!(dogs.header("link"), Some(next.as_str()));
    let exact = s.get("/api/v1/pets?species=dog&limit=4").await;
    assert_eq!(exact.header("link"), None, "offset + items == total: no link");

    let default = s.get("/api/v1/pets").await;
    assert_eq!(default.body["limit"], 20, "PAGINATION_LIMIT default");
}

/// The path and query of a `Link: <…>; rel="next"` header.
fn next_of(link: Option<&str>) -> Option<String> {
    let link = link?;
    Some(link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0.to_string())
}

#[tokio::test]
async fn the_next_link_is_a_cursor_that_walks_the_list_once_while_it_changes() {
    let s = Server::start();
    let mut ids = Vec::new();
    for i in 0..9 {
        let species = if i % 3 == 0 { "cat" } else { "dog" };
        let tags = if i % 2 == 0 { json!(["even"]) } else { json!([]) };
        ids.push(s.create_pet(&json!({"name": format!("p{i}"), "species": species, "tags": tags})).await);
    }
    // Following the links gives what offset pages give, page by page.
    // (filter, total, which of the pets made above it matches)
    type Walk = (&'static str, i64, fn(usize) -> bool);
    let filters: [Walk; 2] = [("species=dog", 6, |i| i % 3 != 0), ("tag=even", 5, |i| i % 2 == 0)];
    for (filter, total, expected) in filters {
        let mut url = Some(format!("/api/v1/pets?{filter}&limit=2"));
        let (mut seen, mut offset) = (Vec::new(), 0);
        while let Some(next) = url {
            let page = s.get(&next).await;
            assert_eq!(page.status, 200, "{}", page.text);
            assert_eq!(page.body["offset"], offset, "{next}");
            assert_eq!(page.body["total"], total, "{next}");
            let by_offset = s.get(&format!("/api/v1/pets?{filter}&limit=2&offset={offset}")).await;
            assert_eq!(page.body["items"], by_offset.body["items"], "{next}");
            let items = page.body["items"].as_array().unwrap();
            seen.extend(items.iter().map(|p| p["id"].as_i64().unwrap()));
            offset += items.len();
            url = next_of(page.header("link"));
        }
        let matching: Vec<i64> = ids.iter().enumerate().filter(|(i, _)| expected(*i)).map(|(_, id)| *id).collect();
        assert_eq!(seen, matching, "{filter}");
    }

    // Rows deleted and added before the cursor while paging: the cursor
    // neither repeats nor skips what is after it (an offset would).
    let first = s.get("/api/v1/pets?limit=3").await;
    let next = next_of(first.header("link")).expect("a next link");
    assert_eq!(s.delete(&format!("/api/v1/pets/{}", ids[0])).await.status, 204);
    let second = s.get(&next).await;
    let second_ids: Vec<i64> = second.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(second_ids, ids[3..6].to_vec(), "the page after the cursor, whatever was deleted before it");
    let shifted = s.get("/api/v1/pets?limit=3&offset=3").await;
    assert_eq!(shifted.body["items"][0]["id"], ids[4], "an offset page shifts when rows before it go");
    // A cursor past the end: an empty page with the total, and no link.
    let end = s.get(&format!("/api/v1/pets?after={}", ids[8])).await;
    assert_eq!((end.body["items"].clone(), end.body["total"].clone()), (json!([]), json!(8)));
    assert_eq!(end.header("link"), None);
    // Data written before is all there.
    assert_eq!(s.get("/api/v1/pets?limit=100").await.body["items"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn paging_parameters_are_checked() {
    let s = Server::start();
    for q in ["limit=0", "limit=101", "limit=abc", "offset=-1", "offset=x", "status=lost", "after=-1", "after=x"] {
        s.get(&format!("/api/v1/pets?{q}")).await.assert_error(400, "invalid_parameter");
    }
    assert_eq!(s.get("/api/v1/pets?limit=100").await.status, 200);
    assert_eq!(s.get("/api/v1/pets?offset=1000").await.body["items"], json!([]));
}

#[tokio::test]
async fn pagination_settings_come_from_the_environment() {
    let s = Server::builder().env("PAGINATION_LIMIT", "2").env("PAGINATION_MAX", "5").start();
    for i in 0..3 {
        s.create_pet(&json!({"name": format!("p{i}"), "species": "dog"})).await;
    }
    let a = s.get("/api/v1/pets").await;
    assert_eq!(a.body["limit"], 2);
    assert_eq!(a.body["items"].as_array().unwrap().len(), 2);
    s.get("/api/v1/pets?limit=6").await.assert_error(400, "invalid_parameter");
}

#[tokio::test]
async fn filters_apply_together() {
    let s = Server::start();
    s.create_pet(&json!({"name": "a", "species": "dog", "tags": ["x", "y"]})).await;
    s.create_pet(&json!({"name": "b", "species": "dog", "tags": ["y"], "status": "sold"})).await;
    s.create_pet(&json!({"name": "c", "species": "cat", "tags": ["x"]})).await;
    let names = |v: &Value| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&s.get("/api/v1/pets?tag=x").await.body), ["a", "c"]);
    assert_eq!(names(&s.get("/api/v1/pets?tag=y&species=dog&status=available").await.body), ["a"]);
    assert_eq!(names(&s.get("/api/v1/pets?status=sold").await.body), ["b"]);
    assert_eq!(names(&s.get("/api/v1/pets?tag=X").await.body), Vec::<String>::new(), "tags are case-sensitive");
    let spaced = s.create_pet(&json!({"name": "d", "species": "sea lion"})).await;
    let found = s.get("/api/v1/pets?species=sea%20lion").await;
    assert_eq!(found.body["items"][0]["id"], spaced, "query values are percent-decoded");
}

/// Clients that give up mid-write (timeouts at every point of a request's
/// life) must leave nothing half-done behind: every later write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_away_mid_write_break_no_later_write() {
    let s = Server::start();
    let before = s.create_pet(&json!({"name": "Before", "species": "dog"})).await;
    let url = s.url("/api/v1/pets");
    for round in 0..8u64 {
        let abandoned = (0..64u64).map(|i| {
            let (url, client) = (url.clone(), s.client.clone());
            async move {
                // From well before the write starts to well after it ends.
                let patience = std::time::Duration::from_micros(200 + (i * 97 + round * 31) % 4000);
                let _ = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"name":"Abandoned","species":"dog","tags":["a","b"]}"#)
                    .timeout(patience)
                    .send()
                    .await;
            }
        });
        futures::future::join_all(abandoned).await;
        for _ in 0..3 {
            let a = s.post("/api/v1/pets", &json!({"name": "After", "species": "cat"})).await;
            assert_eq!(a.status, 201, "round {round}: a write after abandoned ones failed: {}", a.text);
        }
    }
    assert_eq!(s.get(&format!("/api/v1/pets/{before}")).await.body["name"], "Before");
}
