//! `petstore export` / `petstore import` on the backend under test: a round
//! trip keeps every record; import refuses to overwrite unless told, names a
//! bad line, and leaves nothing half-imported.

use std::path::Path;
use std::process::Output;

use serde_json::json;
use crate::support::Server;

fn petstore(database_url: &str, args: &[&str]) -> Output {
    crate::support::command()
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url)
        .output()
        .expect("run petstore")
}

fn records(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(str::to_string).collect()
}

async fn seeded() -> Server {
    let s = Server::start();
    for i in 0..3 {
        s.create_pet(&json!({"name": format!("p{i}"), "species": "dog", "tags": ["a", format!("t{i}")]})).await;
    }
    let order = s.post("/api/v1/orders", &json!({"pet_id": 1, "quantity": 2})).await;
    assert_eq!(order.status, 201);
    s
}

/// A seeded server, and its export in a temporary folder.
async fn seeded_and_exported() -> (Server, tempfile::TempDir, std::path::PathBuf) {
    let s = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.jsonl");
    assert!(petstore(&s.database_url, &["export", "--to", file.to_str().unwrap()]).status.success());
    (s, dir, file)
}

#[tokio::test]
async fn an_export_imported_elsewhere_exports_the_same_records() {
    let s = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.jsonl");
    let out = petstore(&s.database_url, &["export", "--to", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 3 pets and 1 orders"));
    let header: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&first).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!((header["format"].as_str(), header["version"].as_i64()), (Some("petstore-backup"), Some(1)));

    let target = crate::support::fresh_database(dir.path());
    let out = petstore(&target, &["import", "--from", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = dir.path().join("second.jsonl");
    assert!(petstore(&target, &["export", "--to", second.to_str().unwrap()]).status.success());
    assert_eq!(records(&first), records(&second));

    // The restored database serves, and new ids continue after the restored ones.
    let restored = Server::builder().database(&target).start();
    assert_eq!(restored.get("/api/v1/pets/3").await.body["tags"], json!(["a", "t2"]));
    assert_eq!(restored.get("/api/v1/pets?tag=t1").await.body["total"], 1, "the tag index was rebuilt");
    assert_eq!(restored.create_pet(&json!({"name": "new", "species": "cat"})).await, 4);
    // The counts behind the totals and the inventory were made with the rows.
    crate::counts::assert_counts_exact(&restored).await;
}

#[tokio::test]
async fn import_refuses_a_database_with_data_unless_told_to_replace() {
    let (s, _dir, file) = seeded_and_exported().await;
    let extra = s.create_pet(&json!({"name": "extra", "species": "dog"})).await;

    let refused = petstore(&s.database_url, &["import", "--from", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--replace"), "{stderr}");
    assert_eq!(s.get(&format!("/api/v1/pets/{extra}")).await.status, 200, "nothing was touched");

    let replaced = petstore(&s.database_url, &["import", "--from", file.to_str().unwrap(), "--replace"]);
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert_eq!(s.get(&format!("/api/v1/pets/{extra}")).await.status, 404);
    assert_eq!(s.get("/api/v1/pets").await.body["total"], 3);
    crate::counts::assert_counts_exact(&s).await;
}

#[tokio::test]
async fn a_bad_line_is_named_and_nothing_is_half_imported() {
    let (s, dir, file) = seeded_and_exported().await;
    let good = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = good.lines().collect();

    let cases = [
        (3, lines[2].replace("\"dog\"", "\"\"")),
        (4, lines[3].replace("\"available\"", "\"lost\"")),
        (5, lines[4].replace("\"quantity\":2", "\"quantity\":0")),
        (5, lines[4].replace("\"pet_id\":1", "\"pet_id\":99")),
        (2, lines[1].replace("Z\"", "\"")),
        (3, "not json".to_string()),
    ];
    for (number, bad) in cases {
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[number - 1] = bad;
        std::fs::write(&file, edited.join("\n")).unwrap();
        let target = crate::support::fresh_database(dir.path().join(format!("t{number}")).as_path());
        if target.starts_with("sqlite") {
            std::fs::create_dir_all(dir.path().join(format!("t{number}"))).unwrap();
        }
        let out = petstore(&target, &["import", "--from", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("line {number}:")), "line {number} not named: {stderr}");
        // Nothing of the good lines before it stayed behind.
        let check = dir.path().join("check.jsonl");
        assert!(petstore(&target, &["export", "--to", check.to_str().unwrap()]).status.success());
        assert!(records(&check).is_empty(), "a failed import left rows behind");
    }
    // A truncated file is refused too: the header's counts do not match.
    std::fs::write(&file, lines[..3].join("\n")).unwrap();
    let target = crate::support::fresh_database(dir.path());
    let out = petstore(&target, &["import", "--from", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    // The source database is untouched by all of this.
    assert_eq!(s.get("/api/v1/pets").await.body["total"], 3);
}
