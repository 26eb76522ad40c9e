//! The end-to-end tests, one binary: each file beside this one is a module
//! of behaviours (`pets`, `orders`, `races`, …), picked up by itself (a new
//! `tests/foo.rs` runs without being listed anywhere), and `support` boots
//! the real `petstore` binary with the real components for them.
//!
//! Run one group with a filter: `cargo test -p petstore-host --test e2e races::`.
//! Tests that need PostgreSQL are `#[ignore]`d; scripts/test runs them with
//! `--include-ignored` on its PostgreSQL pass.

mod support;

automod::dir!("../tests");
