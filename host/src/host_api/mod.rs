//! Host interfaces: what a handler component imports from the host
//! (`database`, `log`, `config`, and the minimal WASI a std guest needs),
//! implemented over the per-request [`RequestState`].
//!
//! The WIT bindings are generated here, once, for the whole host.

mod database;
mod handler_config;
mod log;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::storage::{Caller, Database, DbError, Grant};
use crate::telemetry::Metrics;

pub mod bindings {
    //! Generated from `wit/petstore.wit`.
    wasmtime::component::bindgen!({
        world: "pet-handler",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "petstore:api/database.transaction": crate::storage::Transaction,
        },
    });
}

/// Settings a handler may read (the `config` interface).
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    pub api_version: String,
    pub pagination_limit: u32,
    pub pagination_max: u32,
}

/// What every request's host state shares: built once at start.
pub struct Shared {
    pub database: Database,
    /// What each routed component may touch in the database, by name; a
    /// component without an entry may touch nothing.
    pub grants: HashMap<String, Arc<Grant>>,
    pub settings: HandlerSettings,
    pub metrics: Arc<Metrics>,
}

/// The host state of one request's store.
pub struct RequestState {
    shared: Arc<Shared>,
    /// Correlates the component's log lines with the request's.
    request_id: Arc<str>,
    component: Arc<str>,
    /// What the component's statements may touch.
    grant: Arc<Grant>,
    /// When the request must be answered: its statements stop then.
    deadline: Instant,
    table: ResourceTable,
    wasi: WasiCtx,
    open_transactions: usize,
    /// What this request's database calls made durable, and whether one lost
    /// to contention.
    outcome: DbOutcome,
    /// Epoch ticks this request's guest has seen (the runtime's yield policy).
    epoch_ticks: u32,
}

impl RequestState {
    pub fn new(shared: Arc<Shared>, request_id: Arc<str>, component: Arc<str>, deadline: Instant) -> Self {
        let grant = shared
            .grants
            .get(&*component)
            .cloned()
            .unwrap_or_else(|| Arc::new(Grant::new(&component, [] as [&str; 0])));
        RequestState {
            shared,
            request_id,
            component,
            grant,
            deadline,
            table: ResourceTable::new(),
            // Nothing granted: no env, args, files or sockets; stdio discarded.
            wasi: WasiCtx::builder().build(),
            open_transactions: 0,
            outcome: DbOutcome::default(),
            epoch_ticks: 0,
        }
    }

    /// Make a kept instance's state the next request's.
    pub fn start_request(&mut self, request_id: Arc<str>, deadline: Instant) {
        self.request_id = request_id;
        self.deadline = deadline;
        self.outcome = DbOutcome::default();
        self.epoch_ticks = 0;
    }

    /// Whether this request lost to database contention before anything it
    /// did was committed: running it again from the start is then safe.
    pub fn may_run_again(&self) -> bool {
        self.outcome.contention && !self.outcome.wrote
    }

    /// Whether the last request left nothing open that the next one could
    /// inherit (a reused instance must not).
    pub fn is_between_requests(&self) -> bool {
        self.open_transactions == 0
    }

    /// Who the component's statements run as: its grant, until its deadline.
    fn caller(&self) -> Caller {
        Caller::Component { grant: self.grant.clone(), deadline: self.deadline }
    }

    /// Count one more epoch tick seen by this request's guest; returns the total.
    pub fn count_epoch_tick(&mut self) -> u32 {
        self.epoch_ticks += 1;
        self.epoch_ticks
    }
}

/// What one request's database calls did, for the runtime's retry decision.
#[derive(Debug, Default)]
struct DbOutcome {
    /// A call failed because the transaction lost to a concurrent one.
    contention: bool,
    /// A call that may have made a change durable succeeded (a commit, or a
    /// writing statement outside a transaction).
    wrote: bool,
}

impl DbOutcome {
    fn record<T>(&mut self, result: &Result<T, DbError>, durable_on_success: bool) {
        match result {
            Ok(_) => self.wrote |= durable_on_success,
            Err(DbError::Contention(_)) => self.contention = true,
            Err(_) => {}
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Add every host interface to `linker`.
pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::petstore::api::database::add_to_linker::<_, HasSelf<RequestState>>(linker, |s| s)?;
    bindings::petstore::api::log::add_to_linker::<_, HasSelf<RequestState>>(linker, |s| s)?;
    bindings::petstore::api::config::add_to_linker::<_, HasSelf<RequestState>>(linker, |s| s)?;
    Ok(())
}
