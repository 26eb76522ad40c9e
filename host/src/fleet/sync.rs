//! Converging on the registry, on every replica: what is active and not
//! yet served here is loaded and swapped in; what this replica runs is
//! reported with every heartbeat.

use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::canary::CANARY_TICK;
use super::registry::{self, Upload};
use super::{Fleet, FleetError, ReplicaState};
use crate::runtime::LoadedComponent;

/// The next notification (`false`: the channel closed); never, without one.
async fn next(woken: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> bool {
    match woken {
        Some(woken) => woken.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

/// While the registry has not been read once (the database is starting),
/// how soon to try again.
const FIRST_SYNC_RETRY: Duration = Duration::from_millis(250);

impl Fleet {
    /// Converge on the registry for as long as the service runs: at once,
    /// on every notification, and every `COMPONENT_SYNC_MS`.
    pub async fn run(self: Arc<Self>) {
        let mut woken = self.registry.database().subscribe(registry::CHANNEL);
        loop {
            let synced_at = tokio::time::Instant::now();
            let wait = match self.sync().await {
                // A canary is judged every tick, so a bad one ends fast.
                Ok(()) if self.runs_a_canary() => self.settings.sync_every.min(CANARY_TICK),
                Ok(()) => self.settings.sync_every,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the component registry; trying again");
                    if self.is_synced() { self.settings.sync_every } else { FIRST_SYNC_RETRY }
                }
            };
            // Until the wait is over, a notification comes, or a canary
            // served here fails (the fleet's counts are then judged now).
            let until = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    woke = next(&mut woken) => {
                        if !woke {
                            woken = None;
                        }
                        break;
                    }
                    () = self.runtime.canary_failed() => {
                        // At most one early judgement per tenth of a tick:
                        // a canary that fails now and then must not make
                        // every failure a sync.
                        if synced_at.elapsed() >= CANARY_TICK / 10 {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Judge the canaries served here, read the registry once, load what
    /// is active (and a running canary) and not yet served, and report (a
    /// heartbeat).
    pub(super) async fn sync(&self) -> Result<(), FleetError> {
        let _busy = self.busy.lock().await;
        self.judge_canaries().await?;
        let mut desired = self.registry.active().await?;
        let canaries = self.registry.canaries().await?;
        self.metrics.canary_state.reset();
        for (name, canary) in &canaries {
            self.metrics.canary_state.with_label_values(&[name, &canary.digest, canary.state.as_str()]).set(1);
        }
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
                self.record(&name, &target, ReplicaState::Converged, None);
            }
            self.follow_canary(&name, canaries.get(&name), None).await;
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
        let upload = Upload {
            name,
            digest: &image.digest,
            bytes: &image.bytes,
            signature: None,
            version: None,
            uploaded_by: "image",
            artifact: None,
            canary: None,
        };
        self.registry.seed(&upload).await?;
        Ok(self.registry.active().await?.remove(name))
    }

    /// Load and serve `digest` of `name`; on failure the running version
    /// keeps serving and the reason is reported.
    async fn converge(&self, name: &str, digest: &str) {
        self.record(name, digest, ReplicaState::Loading, None);
        let loaded = async {
            // A promoted canary is already loaded.
            let loaded = match self.runtime.canary(name).filter(|c| c.loaded.digest == digest) {
                Some(canary) => canary.loaded.clone(),
                None => self.load_stored(name, digest).await?,
            };
            Ok::<_, FleetError>(self.runtime.install(loaded)?)
        };
        match loaded.await {
            Ok(_) => self.record(name, digest, ReplicaState::Converged, None),
            Err(err) => {
                tracing::warn!(component = name, digest, error = %err, "cannot load the active version; the running one keeps serving");
                self.record(name, digest, ReplicaState::Failed, Some(err.to_string()));
            }
        }
    }

    /// A stored version of `name`, checked and loaded (not yet served).
    pub(super) async fn load_stored(&self, name: &str, digest: &str) -> Result<Arc<LoadedComponent>, FleetError> {
        let no_such = || FleetError::NoSuchVersion { name: name.into(), digest: digest.into() };
        let stored = self.registry.fetch(name, digest).await?.ok_or_else(no_such)?;
        self.check_trusted(name, digest, &stored)?;
        let (loaded, _) = self.load(name, stored.bytes, stored.artifact).await?;
        Ok(Arc::new(loaded))
    }

    fn failed_before(&self, name: &str, digest: &str) -> bool {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        states.get(name).is_some_and(|a| a.desired == digest && a.state == ReplicaState::Failed)
    }
}
