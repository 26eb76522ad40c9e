//! The component runtime: one engine and linker for the process, every
//! routed component loaded and checked at start and swappable while
//! serving ([`Runtime::compile`], then [`Runtime::install`]; which version
//! to serve is [`crate::fleet`]'s to decide), and [`Runtime::invoke`], which
//! runs one request in an instance (fresh, or warm when `INSTANCE_REUSE`
//! allows) under a deadline.

mod component;
mod engine;
mod slot;
mod tally;
mod warm;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, UpdateDeadline};

pub use component::{LoadError, LoadedComponent, Origin, precompiled_path, sha256_hex};
pub use engine::{PoolLimits, build as build_engine};
pub use slot::Canary;
pub use tally::Counts;
use tally::Series;

use slot::Slot;

use warm::{Instance, WarmInstances};

use crate::host_api::bindings::exports::petstore::api::handler::{Request, Response};
use crate::host_api::{self, RequestState, Shared};
use crate::telemetry::{Metrics, traces};

/// Epoch ticks (of `engine::EPOCH_TICK`) a guest runs before it starts
/// yielding at every tick.
const TICKS_BEFORE_YIELDING: u32 = 3;

/// Runs of one request when it keeps losing to database contention.
const MAX_ATTEMPTS: u32 = 3;

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

#[derive(Debug, Error)]
pub enum SwapError {
    #[error("no routed component is named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<RequestState>,
    /// The routed components by name. The set of names is fixed at start;
    /// each entry's versions swap atomically: a request holds the `Arc` it
    /// started with, new requests get the newest.
    components: HashMap<Arc<str>, Slot>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    /// One permit per pool slot, so a full pool queues briefly and then
    /// answers 503 instead of failing instantiation.
    slots: Arc<Semaphore>,
    warm: WarmInstances,
    timeout: Duration,
    /// An answer slower than this counts as slow in a version's tally
    /// (`CANARY_MAX_P95_MS`).
    slow_after: Duration,
    /// Signalled when a canary fails a request or answers slowly, so the
    /// fleet can judge it before its next tick.
    canary_failed: tokio::sync::Notify,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Build the engine and linker and load every component in `files`
    /// (name → path). Fails before the server listens if any does not fit.
    pub fn new(
        limits: PoolLimits,
        (timeout, slow_after): (Duration, Duration),
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        files: &[(String, &Path)],
    ) -> anyhow::Result<Runtime> {
        let engine = engine::build(limits)?;
        let mut linker = Linker::new(&engine);
        host_api::add_to_linker(&mut linker)?;
        let mut components = HashMap::new();
        for (name, path) in files {
            let loaded = LoadedComponent::from_file(&engine, &linker, path)?;
            tracing::info!(component = name, origin = ?loaded.origin, digest = loaded.digest, "component loaded");
            metrics.known_component(name);
            metrics.known_version(name, &loaded.digest);
            components.insert(Arc::from(name.as_str()), Slot::new(loaded));
        }
        let ticker = engine::EpochTicker::start(engine.clone())?;
        Ok(Runtime {
            engine,
            linker,
            components,
            shared,
            metrics,
            slots: Arc::new(Semaphore::new(limits.instances as usize)),
            warm: WarmInstances::new(limits.reuse, limits.idle() as usize),
            timeout,
            slow_after,
            canary_failed: tokio::sync::Notify::new(),
            _ticker: ticker,
        })
    }

    /// The stable version of `name`.
    pub fn component(&self, name: &str) -> Option<Arc<LoadedComponent>> {
        self.components.get(name).map(Slot::stable)
    }

    /// The version of `name` that serves the next request (its canary's
    /// share goes to the canary).
    pub fn pick(&self, name: &str) -> Option<Arc<LoadedComponent>> {
        self.components.get(name).map(Slot::pick)
    }

    /// The canary of `name`, while one runs here.
    pub fn canary(&self, name: &str) -> Option<Arc<Canary>> {
        self.components.get(name).and_then(Slot::canary)
    }

    /// The stable version of every routed component, by name.
    pub fn components(&self) -> Vec<Arc<LoadedComponent>> {
        let mut all: Vec<_> = self.components.values().map(Slot::stable).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Compile `bytes` as the component `name` and check them against the
    /// world, without serving them yet. CPU-bound: call from a blocking
    /// thread. A failure is counted as a refused swap.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<LoadedComponent, SwapError> {
        self.known(name)?;
        let started = Instant::now();
        LoadedComponent::from_bytes(&self.engine, &self.linker, name, bytes).map_err(|err| {
            self.metrics.swaps.with_label_values(&[name, "rejected"]).inc();
            let took_ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::warn!(component = name, error = %err, took_ms, "component refused; the running version keeps serving");
            SwapError::Load(err)
        })
    }

    /// Load `artifact`, the compiled form of `bytes`, as the component
    /// `name`, without serving it yet.
    ///
    /// # Safety
    /// As [`LoadedComponent::from_artifact`]: the caller knows this service
    /// compiled `artifact` from exactly `bytes`.
    pub unsafe fn load_artifact(
        &self,
        name: &str,
        bytes: &[u8],
        artifact: &[u8],
    ) -> Result<LoadedComponent, SwapError> {
        self.known(name)?;
        // SAFETY: the caller's promise above.
        Ok(unsafe { LoadedComponent::from_artifact(&self.engine, &self.linker, name, bytes, artifact) }?)
    }

    fn known(&self, name: &str) -> Result<(), SwapError> {
        if self.components.contains_key(name) { Ok(()) } else { Err(SwapError::Unknown(name.to_string())) }
    }

    /// Serve `loaded` from now on as its component's stable version:
    /// requests that started on the old one finish on it. A canary of the
    /// same version is promoted by this (it ends).
    pub fn install(&self, loaded: Arc<LoadedComponent>) -> Result<Arc<LoadedComponent>, SwapError> {
        let slot = self.slot(&loaded.name)?;
        let name = &*loaded.name;
        if slot.canary().is_some_and(|canary| canary.loaded.digest == loaded.digest) {
            slot.set_canary(None);
        }
        let old = slot.set_stable(loaded.clone());
        self.warm.clear(name);
        self.served(name, &old.digest, false);
        self.served(name, &loaded.digest, true);
        self.metrics.swaps.with_label_values(&[name, "ok"]).inc();
        tracing::info!(component = name, digest = loaded.digest, previous = old.digest, "component swapped");
        Ok(loaded)
    }

    /// Serve `canary` beside the stable version (replacing any canary), or
    /// with `None` end the canary: the stable version serves every request.
    pub fn set_canary(&self, name: &str, canary: Option<Canary>) -> Result<(), SwapError> {
        let slot = self.slot(name)?;
        let digest = canary.as_ref().map(|c| c.loaded.digest.clone());
        if let Some(digest) = &digest {
            self.served(name, digest, true);
        }
        if let Some(old) = slot.set_canary(canary)
            && Some(&old.loaded.digest) != digest.as_ref()
            && old.loaded.digest != slot.stable().digest
        {
            self.served(name, &old.loaded.digest, false);
            // Its idle instances would hold warm slots until the next swap.
            self.warm.clear(name);
            tracing::info!(component = name, digest = old.loaded.digest, "canary ended");
        }
        Ok(())
    }

    /// Wait until a canary fails a request or answers slowly.
    pub async fn canary_failed(&self) {
        self.canary_failed.notified().await;
    }

    fn slot(&self, name: &str) -> Result<&Slot, SwapError> {
        self.components.get(name).ok_or_else(|| SwapError::Unknown(name.to_string()))
    }

    /// Keep `component_info` true: 1 for each version this replica serves.
    /// Its request and error counters exist from then on, at zero.
    fn served(&self, name: &str, digest: &str, serving: bool) {
        if serving {
            self.metrics.known_version(name, digest);
        } else {
            self.metrics.forget_version(name, digest);
        }
    }

    /// Run `request` in an instance of `component`: a fresh one, or with
    /// `INSTANCE_REUSE` > 1 a warm one that answered earlier requests
    /// cleanly. A trap, a timeout or exhaustion of the guest's memory ends
    /// only this instance, which is never reused.
    ///
    /// A request that answered 503 because its transaction lost to a
    /// concurrent one (a serialization failure or deadlock), before anything
    /// it did was committed, is run again from the start, at most
    /// [`MAX_ATTEMPTS`] times in all and within the same deadline: the
    /// client sees the 503 only if contention persists.
    pub async fn invoke(&self, component: &Arc<LoadedComponent>, request: Request) -> Result<Response, InvokeError> {
        let _slot = tokio::time::timeout(INSTANCE_QUEUE_TIMEOUT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| InvokeError::Saturated)?
            .map_err(|_| InvokeError::Saturated)?;
        let started = Instant::now();
        let answer = self.run(component, request).await;
        // A 5xx of its own, an answer that is no HTTP status, a trap or the
        // deadline: the version failed this request.
        let failed = answer.as_ref().map_or(true, |response| !(100..500).contains(&response.status));
        let took = started.elapsed();
        let slow = took > self.slow_after;
        component.tally.record(failed, slow, took, || {
            let labels = [&*component.name, component.digest.as_str()];
            Series {
                requests: self.metrics.version_requests.with_label_values(&labels),
                errors: self.metrics.version_errors.with_label_values(&labels),
                duration: self.metrics.version_duration.with_label_values(&labels),
            }
        });
        if (failed || slow) && self.canary(&component.name).is_some_and(|c| Arc::ptr_eq(&c.loaded, component)) {
            self.canary_failed.notify_one();
        }
        answer
    }

    /// Run `request` until it answers, again after a lost transaction.
    async fn run(&self, component: &Arc<LoadedComponent>, request: Request) -> Result<Response, InvokeError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut attempt = 1;
        loop {
            let (response, instance) = self.attempt(component, &request, deadline).await?;
            let again = response.status == 503 && instance.store.data().may_run_again() && attempt < MAX_ATTEMPTS;
            self.warm.put(instance, |version| {
                self.components.get(&*component.name).is_some_and(|slot| slot.serves(version))
            });
            if !again {
                return Ok(response);
            }
            self.metrics.contention_retries.with_label_values(&[&component.name]).inc();
            tracing::debug!(
                component = &*component.name,
                request_id = request.request_id,
                attempt,
                "lost to contention; running the request again"
            );
            // Jittered back-off, so the transactions that collided do not collide again.
            let pause = Duration::from_millis(u64::from(attempt) * fastrand::u64(5..25));
            if tokio::time::Instant::now() + pause >= deadline {
                return Ok(response);
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// One run of `request` in an instance, until `deadline`.
    async fn attempt(
        &self,
        component: &Arc<LoadedComponent>,
        request: &Request,
        deadline: tokio::time::Instant,
    ) -> Result<(Response, Instance), InvokeError> {
        let name = &*component.name;
        let request_id = Arc::from(request.request_id.as_str());
        let run = async {
            let mut instance = match self.warm.take(component) {
                Some(mut warm) => {
                    warm.store.data_mut().start_request(request_id, deadline);
                    self.metrics.instance_reuses.with_label_values(&[name]).inc();
                    warm
                }
                None => self.instantiate(component, request_id, deadline).await?,
            };
            instance.store.set_epoch_deadline(1);
            instance.served += 1;
            let response = instance.handler.petstore_api_handler().call_handle(&mut instance.store, request).await?;
            Ok::<_, wasmtime::Error>((response, instance))
        };
        let span = tracing::info_span!(
            target: traces::TARGET,
            "component",
            otel.name = format!("component {name}"),
            petstore.component = name,
            petstore.component.digest = &*component.digest,
        );
        match tokio::time::timeout_at(deadline, run.instrument(span)).await {
            Err(_) => {
                self.metrics.timeouts.with_label_values(&[name]).inc();
                Err(InvokeError::Timeout)
            }
            Ok(Err(trap)) => {
                self.metrics.traps.with_label_values(&[name]).inc();
                Err(InvokeError::Trap(format!("{trap:#}")))
            }
            Ok(Ok(answered)) => Ok(answered),
        }
    }

    async fn instantiate(
        &self,
        component: &Arc<LoadedComponent>,
        request_id: Arc<str>,
        deadline: tokio::time::Instant,
    ) -> wasmtime::Result<Instance> {
        let started = Instant::now();
        let state = RequestState::new(self.shared.clone(), request_id, component.name.clone(), deadline);
        let mut store = Store::new(&self.engine, state);
        // A guest still running after a few epoch ticks yields to the
        // executor at every tick, so a busy guest cannot starve other requests
        // and the timeout can fire. tokio's `yield_now` (not wasmtime's
        // plain `Yield`, which wakes the task at once) lets the I/O driver run
        // first: otherwise spinning guests delay new requests by hundreds of
        // milliseconds. Ordinary requests, which merely span a tick or two
        // while waiting on the database, never yield: a yield costs them a
        // trip through the scheduler (measured: p99 17–25 ms → 27–31 ms).
        store.epoch_deadline_callback(|mut ctx| {
            Ok(if ctx.data_mut().count_epoch_tick() < TICKS_BEFORE_YIELDING {
                UpdateDeadline::Continue(1)
            } else {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        let handler = component.pre.instantiate_async(&mut store).await?;
        self.metrics.instantiation.with_label_values(&[&component.name]).observe(started.elapsed().as_secs_f64());
        Ok(Instance { store, handler, component: component.clone(), served: 0 })
    }
}
