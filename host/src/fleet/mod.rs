//! Hot swap for the whole fleet. The component registry in the service's
//! own database is the truth: which versions of each component exist, and
//! which one is active. Every replica converges on it:
//!
//! - [`Fleet::publish`] (an upload on any replica): check the signature,
//!   compile and type-check, then store and activate in one transaction that
//!   also wakes every replica (PostgreSQL `NOTIFY`), then swap here;
//! - [`Fleet::run`] (on every replica): on each wake-up, and every
//!   `COMPONENT_SYNC_MS` as the safety net, load what is active and not yet
//!   served (from the cache of compiled artifacts when it can), swap it in,
//!   and report what it runs with a heartbeat. A version it cannot load is
//!   reported as failed, and the running one keeps serving.
//!
//! At start a replica serves its image's components; the first time a
//! component is seen they seed the registry, and after that the registry's
//! active version wins.

mod artifact;
mod file_watch;
mod registry;
mod signature;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub use artifact::ArtifactKey;
pub use file_watch::watch_files;
pub use registry::{Registry, Report, Version};
pub use signature::{SignatureError, SignaturePolicy, from_header as signature_from_header};

use crate::runtime::{LoadedComponent, Runtime, SwapError, cached_artifact_path, sha256_hex, write_artifact};
use crate::storage::{Database, DbError};

/// While the registry has not been read once (the database is starting),
/// how soon to try again.
const FIRST_SYNC_RETRY: Duration = Duration::from_millis(250);

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("no routed component is named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the component was refused and the running version keeps serving: {0}")]
    Refused(String),
    #[error("no stored version of {name} has the digest {digest}")]
    NoSuchVersion { name: String, digest: String },
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<SwapError> for FleetError {
    fn from(err: SwapError) -> Self {
        match err {
            SwapError::Unknown(name) => FleetError::Unknown(name),
            SwapError::Load(err) => FleetError::Refused(err.to_string()),
        }
    }
}

/// How the fleet is set up (from the configuration).
pub struct Settings {
    pub replica: String,
    pub policy: SignaturePolicy,
    pub cache_dir: PathBuf,
    pub versions_kept: u32,
    pub sync_every: Duration,
    /// Signs the compiled artifacts this replica shares (`None` without an
    /// admin token: nothing is uploaded then, and nothing shared).
    pub artifact_key: Option<ArtifactKey>,
}

pub struct Fleet {
    registry: Registry,
    runtime: Arc<Runtime>,
    settings: Settings,
    /// The image's own components by name, with their digests: the
    /// registry's first versions, trusted without a signature, and what is
    /// served until the registry has been read.
    image: HashMap<String, ImageComponent>,
    /// Per component, how this replica's last attempt to converge went.
    states: Mutex<HashMap<String, Attempt>>,
    /// Set once the registry has been read and acted on.
    synced: AtomicBool,
    /// One publish or sync at a time, so a sync that read the registry
    /// before a publish cannot swap back to what the publish replaced.
    busy: tokio::sync::Mutex<()>,
}

/// One of the image's own component files.
struct ImageComponent {
    bytes: Vec<u8>,
    digest: String,
}

/// This replica's state for one component.
#[derive(Debug, Clone)]
struct Attempt {
    /// The active digest it tried to reach.
    desired: String,
    state: &'static str,
    reason: Option<String>,
}

/// A component's status across the fleet.
#[derive(Debug, serde::Serialize)]
pub struct ComponentStatus {
    pub name: String,
    /// The registry's active digest (`None` before the registry is seeded).
    pub desired: Option<String>,
    /// Every live replica has loaded the desired version.
    pub converged: bool,
    pub replicas: Vec<Report>,
    pub versions: Vec<Version>,
}

impl Fleet {
    /// `image`: the image's own component files, by name.
    pub fn new(db: Database, runtime: Arc<Runtime>, settings: Settings, image: HashMap<String, Vec<u8>>) -> Fleet {
        if !settings.policy.is_required() {
            tracing::warn!("no COMPONENT_PUBLIC_KEY: component uploads are accepted unsigned (development only)");
        }
        Fleet {
            registry: Registry::new(db),
            runtime,
            settings,
            image: image
                .into_iter()
                .map(|(name, bytes)| {
                    let digest = sha256_hex(&bytes);
                    (name, ImageComponent { bytes, digest })
                })
                .collect(),
            states: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the registry has been read and acted on (readiness).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn replica(&self) -> &str {
        &self.settings.replica
    }

    /// Make `bytes` the active version of `name` everywhere: check their
    /// signature, compile and type-check them here, store and activate them
    /// (waking every replica), then serve them here. On any failure nothing
    /// changes anywhere.
    pub async fn publish(
        &self,
        name: &str,
        bytes: Vec<u8>,
        signature: Option<String>,
        uploaded_by: &str,
    ) -> Result<Arc<LoadedComponent>, FleetError> {
        if self.runtime.component(name).is_none() {
            return Err(FleetError::Unknown(name.into()));
        }
        self.settings.policy.verify(&bytes, signature.as_deref())?;
        let _busy = self.busy.lock().await;
        let (loaded, bytes) = self.compile(name, bytes).await?;
        let artifact = self.settings.artifact_key.as_ref().and_then(|key| {
            let artifact = loaded.artifact()?;
            let mac = key.sign(name, &loaded.digest, &artifact);
            Some((artifact, mac))
        });
        let upload = registry::Upload {
            name,
            digest: &loaded.digest,
            bytes: &bytes,
            signature: signature.as_deref(),
            uploaded_by,
            artifact,
        };
        self.registry.publish(&upload, self.settings.versions_kept).await?;
        let digest = loaded.digest.clone();
        let installed = self.runtime.install(loaded)?;
        self.record(name, &digest, "converged", None);
        self.report_now().await;
        Ok(installed)
    }

    /// Make a stored version active everywhere (a rollback, or a roll
    /// forward again), after loading it here.
    pub async fn activate(&self, name: &str, digest: &str) -> Result<Arc<LoadedComponent>, FleetError> {
        if self.runtime.component(name).is_none() {
            return Err(FleetError::Unknown(name.into()));
        }
        let _busy = self.busy.lock().await;
        let no_such = || FleetError::NoSuchVersion { name: name.into(), digest: digest.into() };
        let stored = self.registry.fetch(name, digest).await?.ok_or_else(no_such)?;
        self.check_trusted(digest, &stored.bytes, stored.signature.as_deref())?;
        self.take_artifact(name, digest, stored.artifact);
        let (loaded, _) = self.compile(name, stored.bytes).await?;
        if !self.registry.activate(name, digest).await? {
            return Err(no_such());
        }
        let installed = self.runtime.install(loaded)?;
        self.record(name, digest, "converged", None);
        self.report_now().await;
        Ok(installed)
    }

    /// Every routed component: desired version, live replicas, stored versions.
    pub async fn status(&self) -> Result<Vec<ComponentStatus>, FleetError> {
        let desired = self.registry.active().await?;
        let live_since = now_ms() - 3 * self.settings.sync_every.as_millis() as i64;
        let mut reports = self.registry.reports(live_since).await?;
        let mut all = Vec::new();
        for component in self.runtime.components() {
            let name = component.name.to_string();
            let desired = desired.get(&name).cloned();
            let replicas = reports.remove(&name).unwrap_or_default();
            let converged = desired.as_ref().is_some_and(|d| {
                let on_it = |r: &Report| r.digest == *d && r.target == *d && r.state == "converged";
                replicas.iter().all(on_it) && !replicas.is_empty()
            });
            let versions = self.registry.versions(&name).await?;
            all.push(ComponentStatus { name, desired, converged, replicas, versions });
        }
        Ok(all)
    }

    /// Converge on the registry for as long as the service runs: at once,
    /// on every notification, and every `COMPONENT_SYNC_MS`.
    pub async fn run(self: Arc<Self>) {
        let mut woken = self.registry.database().subscribe(registry::CHANNEL);
        loop {
            let wait = match self.sync().await {
                Ok(()) => self.settings.sync_every,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the component registry; trying again");
                    if self.is_synced() { self.settings.sync_every } else { FIRST_SYNC_RETRY }
                }
            };
            match woken.as_mut() {
                Some(woken) => {
                    let _ = tokio::time::timeout(wait, woken.recv()).await;
                }
                None => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Read the registry once, load what is active and not yet served, and
    /// report (a heartbeat).
    async fn sync(&self) -> Result<(), FleetError> {
        let _busy = self.busy.lock().await;
        let mut desired = self.registry.active().await?;
        for component in self.runtime.components() {
            let name = component.name.to_string();
            let target = match desired.remove(&name) {
                Some(digest) => digest,
                None => match self.seed(&name).await? {
                    Some(digest) => digest,
                    None => continue,
                },
            };
            self.warn_if_image_differs(&name, &target);
            if component.digest != target && !self.failed_before(&name, &target) {
                self.converge(&name, &target).await;
            } else if component.digest == target {
                self.record(&name, &target, "converged", None);
            }
        }
        self.report().await?;
        self.synced.store(true, Ordering::Release);
        Ok(())
    }

    /// Say (once per start) when the image carries another version of a
    /// component than the registry's active one: the registry's is served.
    fn warn_if_image_differs(&self, name: &str, active: &str) {
        let Some(image) = self.image.get(name).map(|image| &image.digest) else { return };
        let first_time = !self.states.lock().unwrap_or_else(PoisonError::into_inner).contains_key(name);
        if image.as_str() != active && first_time {
            tracing::warn!(
                component = name,
                image = format!("sha256:{image}"),
                active = format!("sha256:{active}"),
                "this image carries another version than the registry's active one, which is served; \
                 roll the image's out with scripts/rollout-component to serve it"
            );
        }
    }

    /// Seed the registry with the image's version of `name`; its digest.
    async fn seed(&self, name: &str) -> Result<Option<String>, FleetError> {
        let Some(image) = self.image.get(name) else { return Ok(None) };
        let upload = registry::Upload {
            name,
            digest: &image.digest,
            bytes: &image.bytes,
            signature: None,
            uploaded_by: "image",
            artifact: None,
        };
        self.registry.seed(&upload).await?;
        Ok(self.registry.active().await?.remove(name))
    }

    /// Load and serve `digest` of `name`; on failure the running version
    /// keeps serving and the reason is reported.
    async fn converge(&self, name: &str, digest: &str) {
        self.record(name, digest, "loading", None);
        let loaded = async {
            let no_such = || FleetError::NoSuchVersion { name: name.into(), digest: digest.into() };
            let stored = self.registry.fetch(name, digest).await?.ok_or_else(no_such)?;
            self.check_trusted(digest, &stored.bytes, stored.signature.as_deref())?;
            self.take_artifact(name, digest, stored.artifact);
            let (loaded, _) = self.compile(name, stored.bytes).await?;
            Ok::<_, FleetError>(self.runtime.install(loaded)?)
        };
        match loaded.await {
            Ok(_) => self.record(name, digest, "converged", None),
            Err(err) => {
                tracing::warn!(component = name, digest, error = %err, "cannot load the active version; the running one keeps serving");
                self.record(name, digest, "failed", Some(err.to_string()));
            }
        }
    }

    /// The bytes are what the registry says they are, and may run here:
    /// signed by the configured key, or one of this image's own components.
    fn check_trusted(&self, digest: &str, bytes: &[u8], signature: Option<&str>) -> Result<(), FleetError> {
        if sha256_hex(bytes) != digest {
            return Err(FleetError::Refused("the stored bytes do not match their digest".into()));
        }
        if self.image.values().any(|image| image.digest == digest) {
            return Ok(());
        }
        Ok(self.settings.policy.verify(bytes, signature)?)
    }

    /// Put a shared artifact into the cache, where [`Fleet::compile`] finds
    /// it, when this fleet's key proves one of its replicas made it.
    fn take_artifact(&self, name: &str, digest: &str, artifact: Option<(Vec<u8>, String)>) {
        let (Some(key), Some((artifact, mac))) = (&self.settings.artifact_key, artifact) else { return };
        let path = cached_artifact_path(&self.settings.cache_dir, name, digest);
        if path.exists() {
            return;
        }
        if !key.verify(name, digest, &artifact, &mac) {
            tracing::warn!(component = name, digest, "a shared artifact's MAC does not verify; compiling instead");
            return;
        }
        if let Err(err) = write_artifact(&path, &artifact) {
            tracing::warn!(component = name, error = %err, "cannot cache a shared artifact; compiling instead");
        }
    }

    /// Compile on a blocking thread, through the artifact cache.
    async fn compile(&self, name: &str, bytes: Vec<u8>) -> Result<(LoadedComponent, Vec<u8>), FleetError> {
        let (runtime, name, cache) = (self.runtime.clone(), name.to_string(), self.settings.cache_dir.clone());
        tokio::task::spawn_blocking(move || {
            let loaded = runtime.compile(&name, &bytes, Some(&cache))?;
            Ok((loaded, bytes))
        })
        .await
        .map_err(|e| FleetError::Refused(format!("the compile task failed: {e}")))?
    }

    fn failed_before(&self, name: &str, digest: &str) -> bool {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.get(name).is_some_and(|a| a.desired == digest && a.state == "failed")
    }

    fn record(&self, name: &str, desired: &str, state: &'static str, reason: Option<String>) {
        let attempt = Attempt { desired: desired.to_string(), state, reason };
        self.states.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), attempt);
    }

    /// Report at once after a change made here; a failure only delays the
    /// report to the next heartbeat.
    async fn report_now(&self) {
        if let Err(err) = self.report().await {
            tracing::warn!(error = %err, "cannot report this replica's components; the next heartbeat will");
        }
    }

    /// Tell the registry what this replica runs.
    async fn report(&self) -> Result<(), FleetError> {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let rows: Vec<(String, Report)> = self
            .runtime
            .components()
            .iter()
            .map(|c| {
                let attempt = states.get(&*c.name);
                let report = Report {
                    replica: self.settings.replica.clone(),
                    digest: c.digest.clone(),
                    target: attempt.map_or_else(|| c.digest.clone(), |a| a.desired.clone()),
                    state: attempt.map_or("converged", |a| a.state).to_string(),
                    reason: attempt.and_then(|a| a.reason.clone()),
                    heartbeat_ms: 0,
                };
                (c.name.to_string(), report)
            })
            .collect();
        Ok(self.registry.report(&self.settings.replica, &rows, now_ms()).await?)
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
