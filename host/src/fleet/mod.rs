//! Hot swap for the whole fleet. The component registry in the service's
//! own database is the truth: which versions of each component exist, and
//! which one is active. Every replica converges on it:
//!
//! - `publish.rs` (an upload or a rollback on any replica): check the
//!   signature and what it says (component, environment, version), compile,
//!   store and activate in one transaction that also wakes every replica
//!   (PostgreSQL `NOTIFY`), then swap here;
//! - `sync.rs` (on every replica): on each wake-up, and every
//!   `COMPONENT_SYNC_MS` as the safety net, load what is active and not yet
//!   served, swap it in, and report what it runs with a heartbeat. A version
//!   it cannot load (or whose signature does not hold) is reported as
//!   failed, and the running one keeps serving;
//! - `status.rs`: where this replica stands with each component (an enum,
//!   reported with every heartbeat), and the fleet's status read back from
//!   every live replica's reports;
//! - `load.rs`: from this pod's cache, from an artifact another replica
//!   shared, or by compiling: native code only when the fleet's artifact
//!   key vouches for it (`artifact.rs`, `cache.rs`).
//!
//! At start a replica serves its image's components; the first time a
//! component is seen they seed the registry, and after that the registry's
//! active version wins, also over a newer image (see docs/security.md:
//! components change through the registry, never behind its back).

mod artifact;
mod cache;
mod canary;
mod file_watch;
mod judge;
mod load;
mod publish;
mod registry;
mod signature;
mod status;
mod sync;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

pub use artifact::ArtifactKey;
pub use canary::{CanaryError, CanaryStatus};
pub use file_watch::watch_files;
pub use judge::Objectives;
pub use registry::{Registry, ReplicaState};
pub use signature::{SignatureError, SignaturePolicy, from_header as signature_from_header};
pub use status::ComponentStatus;

use self::cache::Cache;
use self::status::Attempt;
use crate::runtime::{Runtime, SwapError, sha256_hex};
use crate::storage::{Database, DbError};
use crate::telemetry::Metrics;

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("no routed component is named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Signature(SignatureError),
    /// A signed version older than the highest activated, or one that names
    /// other bytes: a downgrade or a replay.
    #[error(transparent)]
    Stale(SignatureError),
    #[error("the component was refused and the running version keeps serving: {0}")]
    Refused(String),
    #[error("no stored version of {name} has the digest {digest}")]
    NoSuchVersion { name: String, digest: String },
    #[error(transparent)]
    Canary(#[from] CanaryError),
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

impl From<SignatureError> for FleetError {
    fn from(err: SignatureError) -> Self {
        FleetError::Signature(err)
    }
}

impl From<registry::PublishError> for FleetError {
    fn from(err: registry::PublishError) -> Self {
        match err {
            registry::PublishError::Stale(err) => FleetError::Stale(err),
            registry::PublishError::Canary(err) => FleetError::Canary(err),
            registry::PublishError::Database(err) => FleetError::Database(err),
        }
    }
}

/// How the fleet is set up (from the configuration).
pub struct Settings {
    pub replica: String,
    /// `ENVIRONMENT`: what a signature must name.
    pub environment: String,
    pub policy: SignaturePolicy,
    pub cache_dir: PathBuf,
    pub versions_kept: u32,
    pub sync_every: Duration,
    /// Vouches for the compiled artifacts replicas share and cache
    /// (`None`: nothing is shared, and the cache uses a key of this
    /// process's own).
    pub artifact_key: Option<ArtifactKey>,
    /// What a canary must meet to be promoted (`CANARY_*`).
    pub objectives: Objectives,
}

pub struct Fleet {
    registry: Registry,
    runtime: Arc<Runtime>,
    settings: Settings,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    /// The image's own components by name, with their digests: the
    /// registry's first versions, trusted without a signature under their
    /// own name only, and what is served until the registry has been read.
    image: HashMap<String, ImageComponent>,
    /// Per component, how this replica's last attempt to converge went.
    states: Mutex<HashMap<String, Attempt>>,
    /// Per component whose canary this replica serves, what it counts.
    canary_counts: Mutex<HashMap<String, canary::Counting>>,
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

impl Fleet {
    /// `registry`: where the registry's tables are; `image`: the image's
    /// own component files, by name.
    pub fn new(
        registry: Database,
        runtime: Arc<Runtime>,
        settings: Settings,
        image: HashMap<String, Vec<u8>>,
        metrics: Arc<Metrics>,
    ) -> Result<Fleet, getrandom::Error> {
        if !settings.policy.is_required() {
            tracing::warn!("no COMPONENT_PUBLIC_KEY: component uploads are accepted unsigned (development only)");
        }
        let cache_key = match &settings.artifact_key {
            Some(key) => key.clone(),
            None => {
                tracing::info!(
                    "no COMPONENT_ARTIFACT_KEY: compiled components are not shared, and cached for this process only"
                );
                ArtifactKey::random()?
            }
        };
        let fleet = Fleet {
            registry: Registry::new(registry),
            runtime,
            cache: Arc::new(Cache::open(&settings.cache_dir, cache_key)),
            settings,
            metrics,
            image: image
                .into_iter()
                .map(|(name, bytes)| {
                    let digest = sha256_hex(&bytes);
                    (name, ImageComponent { bytes, digest })
                })
                .collect(),
            states: Mutex::new(HashMap::new()),
            canary_counts: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            busy: tokio::sync::Mutex::new(()),
        };
        for component in fleet.runtime.components() {
            fleet.export_state(&component.name, None);
        }
        Ok(fleet)
    }

    /// Whether the registry has been read and acted on (readiness).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn replica(&self) -> &str {
        &self.settings.replica
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
