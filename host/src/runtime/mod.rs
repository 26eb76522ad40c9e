//! The component runtime: one engine and linker for the process, every
//! routed component loaded and checked at start, and [`Runtime::invoke`],
//! which runs one request in a fresh instance under a deadline.

mod component;
mod engine;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, UpdateDeadline};

pub use component::{LoadError, LoadedComponent};
pub use engine::PoolLimits;

use crate::host_api::bindings::exports::petstore::api::handler::{Request, Response};
use crate::host_api::{self, RequestState, Shared};

/// How long a request waits for a free instance slot before 503.
const INSTANCE_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a request got no answer from its component.
#[derive(Debug, Error)]
pub enum InvokeError {
    #[error("every instance slot is busy")]
    Saturated,
    #[error("the handler ran past its deadline")]
    Timeout,
    #[error("the handler trapped: {0}")]
    Trap(String),
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<RequestState>,
    components: HashMap<Arc<str>, Arc<LoadedComponent>>,
    shared: Arc<Shared>,
    /// One permit per pool slot, so a full pool queues briefly and then
    /// answers 503 instead of failing instantiation.
    slots: Arc<Semaphore>,
    timeout: Duration,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Build the engine and linker and load every component in `files`
    /// (name → path). Fails before the server listens if any does not fit.
    pub fn new(
        limits: PoolLimits,
        timeout: Duration,
        shared: Arc<Shared>,
        files: &[(String, &Path)],
    ) -> anyhow::Result<Runtime> {
        let engine = engine::build(limits)?;
        let mut linker = Linker::new(&engine);
        host_api::add_to_linker(&mut linker)?;
        let mut components = HashMap::new();
        for (name, path) in files {
            let loaded = LoadedComponent::from_file(&engine, &linker, path)?;
            components.insert(Arc::from(name.as_str()), Arc::new(loaded));
        }
        let ticker = engine::EpochTicker::start(engine.clone())?;
        Ok(Runtime {
            engine,
            linker,
            components,
            shared,
            slots: Arc::new(Semaphore::new(limits.instances as usize)),
            timeout,
            _ticker: ticker,
        })
    }

    pub fn component(&self, name: &str) -> Option<Arc<LoadedComponent>> {
        self.components.get(name).cloned()
    }

    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(|k| &**k)
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<RequestState> {
        &self.linker
    }

    /// Run `request` in a fresh instance of `component`. A trap, a timeout
    /// or exhaustion of the guest's memory ends only this instance.
    pub async fn invoke(&self, component: &LoadedComponent, request: Request) -> Result<Response, InvokeError> {
        let _slot = tokio::time::timeout(INSTANCE_QUEUE_TIMEOUT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| InvokeError::Saturated)?
            .map_err(|_| InvokeError::Saturated)?;
        let state =
            RequestState::new(self.shared.clone(), Arc::from(request.request_id.as_str()), component.name.clone());
        let mut store = Store::new(&self.engine, state);
        // Yield to the executor every epoch tick, so a busy guest cannot
        // starve other requests and the timeout below can fire. tokio's
        // `yield_now` (not wasmtime's plain `Yield`, which wakes the task at
        // once) lets the I/O driver run first: otherwise spinning guests
        // delay new requests by hundreds of milliseconds.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))));

        let run = async {
            let handler = component.pre.instantiate_async(&mut store).await?;
            handler.petstore_api_handler().call_handle(&mut store, &request).await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => Err(InvokeError::Timeout),
            Ok(Err(trap)) => Err(InvokeError::Trap(format!("{trap:#}"))),
            Ok(Ok(response)) => Ok(response),
        }
    }
}
