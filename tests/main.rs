//! The end-to-end tests, one binary: each file beside this one is a module
//! of behaviours, listed below, and `support` boots the real `petstore`
//! binary with the real components for them. A file left out of the list
//! would never run, so [`every_test_file_is_listed`] fails until it is in.
//!
//! Run one group with a filter: `cargo test -p petstore-host --test e2e races::`.
//! Tests that need PostgreSQL are `#[ignore]`d; scripts/test runs them with
//! `--include-ignored` on its PostgreSQL pass.

mod support;

/// Declare each test module, and keep their names for the check below.
macro_rules! test_modules {
    ($($name:ident),* $(,)?) => {
        $(mod $name;)*
        const MODULES: &[&str] = &[$(stringify!($name)),*];
    };
}

test_modules!(
    admin,
    artifacts,
    backup,
    canary,
    counts,
    crash,
    db_errors,
    deadlines,
    edge,
    fleet,
    isolation,
    metrics,
    orders,
    pets,
    plans,
    postgres,
    races,
    recovery,
    sandbox,
    shutdown,
    signatures,
    slow_clients,
    startup,
    swap,
    traces,
);

#[test]
fn every_test_file_is_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok()?.strip_suffix(".rs").map(str::to_string))
        .filter(|name| name != "main")
        .collect();
    files.sort();
    let mut listed: Vec<&str> = MODULES.to_vec();
    listed.sort();
    assert_eq!(files, listed, "every tests/*.rs file must be listed in test_modules! in tests/main.rs");
}
