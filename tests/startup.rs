//! Start-up refuses bad configuration and bad components with one clear
//! line, before it listens.


fn run_with(env: &[(&str, &str)], components: &std::path::Path) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crate::support::command();
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PORT", "0")
        .env("ADMIN_PORT", "0")
        .env("COMPONENTS_DIR", components)
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("t.db").display()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    drop(dir);
    out
}

#[test]
fn a_bad_variable_stops_start_up_with_exit_code_2_naming_it() {
    let components = crate::support::built_components();
    for (var, value) in [
        ("PORT", "http"),
        ("PAGINATION_MAX", "0"),
        ("REQUEST_TIMEOUT_MS", "soon"),
        ("ENVIRONMENT", "qa"),
        ("LOG_LEVEL", "loud[["),
        ("CORS_ORIGINS", "*.example.com"),
        ("INSTANCE_REUSE", "0"),
        ("INSTANCE_REUSE", "many"),
    ] {
        let out = run_with(&[(var, value)], &components);
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{var} not named in {stderr:?}");
    }
}

#[test]
fn a_missing_route_table_or_component_stops_start_up() {
    let empty = tempfile::tempdir().unwrap();
    let out = run_with(&[], empty.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes.toml"));

    std::fs::write(empty.path().join("routes.toml"), "[routes]\n\"/api/v1/pets\" = \"pets.wasm\"\n").unwrap();
    let out = run_with(&[], empty.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pets.wasm"));
}

#[test]
fn a_file_that_is_not_a_component_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routes.toml"), "[routes]\n\"/api/v1/pets\" = \"pets.wasm\"\n").unwrap();
    std::fs::write(dir.path().join("pets.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = run_with(&[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("component pets"), "{stderr}");
}

#[test]
fn help_and_unknown_commands() {
    let help = crate::support::command().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: petstore"));
    let bad = crate::support::command().arg("frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

async fn components(s: &crate::support::Server) -> serde_json::Value {
    let list = s.client.get(s.admin_url("/admin/components")).bearer_auth("t").send().await.unwrap();
    list.json::<serde_json::Value>().await.unwrap()["components"].clone()
}

fn precompiled(list: &serde_json::Value, name: &str) -> bool {
    list.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["precompiled"].as_bool().unwrap()
}

#[tokio::test]
async fn precompiled_components_are_loaded_without_compiling() {
    let s = crate::support::Server::builder().precompiled().env("ADMIN_TOKEN", "t").start();
    let list = components(&s).await;
    assert!(precompiled(&list, "pets") && precompiled(&list, "orders"), "{list}");
    assert_eq!(s.get("/api/v1/pets").await.status, 200);
    let artifacts = std::fs::read_dir(s.components_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(artifacts, 2);
}

#[tokio::test]
async fn a_stale_or_corrupt_artifact_is_never_used() {
    let first = crate::support::Server::builder().precompiled().env("ADMIN_TOKEN", "t").start();
    let dir = first.components_dir();
    // pets.wasm changes after compiling: its artifact is for other bytes.
    std::fs::write(dir.join("pets.wasm"), crate::support::test_component("version_a.wasm")).unwrap();
    // orders' artifact is damaged.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("orders.") && path.extension().unwrap() == "cwasm" {
            std::fs::write(&path, b"not an artifact").unwrap();
        }
    }
    // A database of its own: on the first one, the registry's versions
    // (the first server's) would be served instead of these files.
    let second_db = first.dir().join("second");
    std::fs::create_dir_all(&second_db).unwrap();
    let s = crate::support::Server::builder()
        .data_of(&first)
        .database(&crate::support::fresh_database(&second_db))
        .env("ADMIN_TOKEN", "t")
        .start();
    drop(first);
    let list = components(&s).await;
    assert!(!precompiled(&list, "pets") && !precompiled(&list, "orders"), "{list}");
    assert_eq!(s.get("/api/v1/pets").await.body["version"], "version-a", "the new bytes serve");
    assert_eq!(s.get("/api/v1/store/inventory").await.status, 200);
    assert!(s.logs().iter().any(|l| l["message"].as_str().unwrap_or("").contains("does not fit this engine")));
}

#[test]
fn production_refuses_sqlite_with_one_line() {
    let out = run_with(&[("ENVIRONMENT", "production")], &crate::support::built_components());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL") && stderr.contains("PostgreSQL"), "{stderr}");
}
