//! The Pet Store host: serves HTTP and runs the business logic as Wasm
//! components on wasmtime.
//!
//! # Layout
//! Layers, each using only those below it:
//! - [`http`]: the HTTP edge: middleware (request id, access log, CORS,
//!   API version), host endpoints (health, OpenAPI), errors → responses, and
//!   the dispatch of `/api/v1/...` to a component.
//! - [`routing`]: the route table (`routes.toml`): path prefix → component.
//! - [`fleet`]: which version of each component every replica serves: the
//!   component registry in the database, uploads, rollbacks, propagation.
//! - [`runtime`]: the engine, loaded components, per-request instances under a
//!   deadline and a memory cap.
//! - [`host_api`]: what components import: `database`, `log`, `config`, WASI.
//! - [`storage`]: the database (sqlx) behind one small API, with migrations.
//!
//! Beside them: [`config`] (the environment), [`telemetry`] (JSON logs and
//! Prometheus metrics, used by every layer), [`server`] (building the
//! service, then serving it), [`shutdown`] (signals and the draining
//! state), [`precompile`] (`petstore compile`) and [`backup`]
//! (`petstore export` / `import`). The records and their rules are the
//! `petstore_model` crate's, shared with the components.

pub mod backup;
pub mod config;
pub(crate) mod fleet;
pub(crate) mod host_api;
pub(crate) mod http;
pub mod precompile;
pub(crate) mod routing;
pub(crate) mod runtime;
pub mod server;
pub(crate) mod shutdown;
pub(crate) mod storage;
pub mod telemetry;
