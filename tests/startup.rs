//! Start-up refuses bad configuration and bad components with one clear
//! line, before it listens.

mod support;

use std::process::Command;

fn run_with(env: &[(&str, &str)], components: &std::path::Path) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_petstore"));
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
    let components = support::built_components();
    for (var, value) in [
        ("PORT", "http"),
        ("PAGINATION_MAX", "0"),
        ("REQUEST_TIMEOUT_MS", "soon"),
        ("ENVIRONMENT", "qa"),
        ("LOG_LEVEL", "loud[["),
        ("CORS_ORIGINS", "*.example.com"),
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
    let help = Command::new(env!("CARGO_BIN_EXE_petstore")).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("usage"));
    let bad = Command::new(env!("CARGO_BIN_EXE_petstore")).arg("frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
