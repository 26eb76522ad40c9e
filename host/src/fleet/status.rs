//! What each replica runs, as the fleet sees it: this replica records
//! where it stands with each component's active version and reports it to
//! the registry with every heartbeat; [`Fleet::status`] reads every live
//! replica's reports back, for the admin API.

use std::sync::PoisonError;

use super::registry::{ReplicaState, Report, Version};
use super::{CanaryStatus, Fleet, FleetError, now_ms};

/// This replica's state for one component.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    /// The active digest it tried to reach.
    pub(super) desired: String,
    pub(super) state: ReplicaState,
    pub(super) reason: Option<String>,
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
    /// Its latest canary, running or decided.
    pub canary: Option<CanaryStatus>,
}

impl Fleet {
    /// Every routed component: desired version, live replicas, stored versions.
    pub async fn status(&self) -> Result<Vec<ComponentStatus>, FleetError> {
        let desired = self.registry.active().await?;
        let live_since = now_ms() - 3 * self.settings.sync_every.as_millis() as i64;
        let mut reports = self.registry.reports(live_since).await?;
        let mut canaries = self.registry.canaries().await?;
        let mut all = Vec::new();
        for component in self.runtime.components() {
            let name = component.name.to_string();
            let desired = desired.get(&name).cloned();
            let replicas = reports.remove(&name).unwrap_or_default();
            let converged = desired.as_ref().is_some_and(|d| {
                let on_it = |r: &Report| r.digest == *d && r.target == *d && r.state == ReplicaState::Converged;
                replicas.iter().all(on_it) && !replicas.is_empty()
            });
            let versions = self.registry.versions(&name).await?;
            let canary = canaries.remove(&name);
            all.push(ComponentStatus { name, desired, converged, replicas, versions, canary });
        }
        Ok(all)
    }

    pub(super) fn record(&self, name: &str, desired: &str, state: ReplicaState, reason: Option<String>) {
        self.export_state(name, Some(state));
        let attempt = Attempt { desired: desired.to_string(), state, reason };
        self.states.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), attempt);
    }

    /// `petstore_fleet_replica_state`: 1 for `state`, 0 for the others (all
    /// 0 while this replica has not yet tried to reach an active version).
    pub(super) fn export_state(&self, name: &str, state: Option<ReplicaState>) {
        for each in ReplicaState::ALL {
            let gauge = self.metrics.replica_state.with_label_values(&[name, each.as_str()]);
            gauge.set(i64::from(state == Some(each)));
        }
    }

    /// Report at once after a change made here; a failure only delays the
    /// report to the next heartbeat.
    pub(super) async fn report_now(&self) {
        if let Err(err) = self.report().await {
            tracing::warn!(error = %err, "cannot report this replica's components; the next heartbeat will");
        }
    }

    /// Tell the registry what this replica runs.
    pub(super) async fn report(&self) -> Result<(), FleetError> {
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
                    state: attempt.map_or(ReplicaState::Converged, |a| a.state),
                    reason: attempt.and_then(|a| a.reason.clone()),
                    heartbeat_ms: 0,
                };
                (c.name.to_string(), report)
            })
            .collect();
        Ok(self.registry.report(&self.settings.replica, &rows, now_ms()).await?)
    }
}
