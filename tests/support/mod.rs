//! What the end-to-end tests share: `server` boots the binary under test
//! (or `container`, the image), `client` talks to it, and [`eventually`]
//! waits for something to become true.

mod client;
mod container;
mod pg;
mod server;
mod traffic;

use std::time::{Duration, Instant};

pub use client::Answer;
pub use pg::{COMPONENT_ROLE, Pg};
pub use server::{
    Server, ServerBuilder, binary, built_components, create_postgres_database, fresh_database, postgres_database,
    routed_components, test_component,
};
pub use traffic::Traffic;

/// Poll `check` until it answers `Some`, and return that; fail the test,
/// naming `what`, if it has not within `within`.
pub async fn eventually<T, F>(what: &str, within: Duration, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] for code that cannot await (starting a server).
pub fn eventually_blocking<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(done) = check() {
            return done;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The binary under test as a command (`petstore export`, a start that must
/// fail, …): this package's build, or `PETSTORE_TEST_BINARY`.
pub fn command() -> std::process::Command {
    std::process::Command::new(binary())
}
