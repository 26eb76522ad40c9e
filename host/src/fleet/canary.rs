//! Canary releases, judged by the fleet itself. A canary is a stored
//! version that serves a share of its component's requests on every
//! replica (`PUT /admin/components/{name}?canary=PERCENT`). Each replica
//! counts what the canary answered (`runtime/tally.rs`) and adds it to the
//! registry's `canary_counts`; on every tick one replica at a time (the
//! canary's row, locked in a transaction, is the lock) sums the fleet's
//! counts and asks the judge (`judge.rs`): a promotion makes the canary the
//! active version, a rollback ends it, and either wakes every replica as an
//! activation does. A plain upload, an activation by hand, a promotion or
//! an abort by hand end a running canary too.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::judge::{Verdict, judge};
use super::registry::{CHANNEL, PublishError, Registry, activate};
use super::{Fleet, FleetError, now_ms};
use crate::runtime::{Canary, Counts, LoadedComponent};
use crate::storage::column::{int, optional_int, optional_text, text};
use crate::storage::{DbError, Transaction, Value};

/// How often a replica that runs a canary flushes its counts and judges.
pub const CANARY_TICK: Duration = Duration::from_millis(250);

/// What this replica counts for a canary it serves.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counting {
    /// The canary's start: its id in the registry.
    started_ms: i64,
    /// Its tally as last added to the registry's counts (when it started
    /// serving as this canary here, at first).
    flushed: Counts,
}

/// A canary's state, as the registry stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Promoted,
    RolledBack,
    Aborted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Promoted => "promoted",
            State::RolledBack => "rolled_back",
            State::Aborted => "aborted",
        }
    }

    fn parse(text: &str) -> Result<State, DbError> {
        [State::Running, State::Promoted, State::RolledBack, State::Aborted]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| DbError::Other(format!("a canary in the unknown state {text:?}")))
    }
}

/// A component's latest canary, with what the fleet counted for it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryStatus {
    pub digest: String,
    pub percent: u8,
    pub state: State,
    pub reason: Option<String>,
    pub started_ms: i64,
    pub decided_ms: Option<i64>,
    pub requests: u64,
    pub errors: u64,
    pub slow: u64,
}

/// Why a canary could not be started or decided by hand.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("{0} already serves every request: it is the active version")]
    AlreadyActive(String),
    #[error("{0} has no running canary")]
    NotRunning(String),
}

// SUM of a BIGINT is a NUMERIC on PostgreSQL: cast back.
const SELECT: &str = "SELECT c.name, c.digest, c.percent, c.state, c.reason, c.started_ms, c.decided_ms, \
     CAST(COALESCE(SUM(n.requests), 0) AS BIGINT), CAST(COALESCE(SUM(n.errors), 0) AS BIGINT), \
     CAST(COALESCE(SUM(n.slow), 0) AS BIGINT) \
     FROM component_canary c LEFT JOIN canary_counts n ON n.name = c.name AND n.started_ms = c.started_ms";
const GROUP: &str = " GROUP BY c.name, c.digest, c.percent, c.state, c.reason, c.started_ms, c.decided_ms";

fn status(row: &[Value]) -> Result<(String, CanaryStatus), DbError> {
    let count = |i| int(row, i).map(|n| n.max(0) as u64);
    Ok((
        text(row, 0)?,
        CanaryStatus {
            digest: text(row, 1)?,
            percent: int(row, 2)?.clamp(1, 99) as u8,
            state: State::parse(&text(row, 3)?)?,
            reason: optional_text(row, 4)?,
            started_ms: int(row, 5)?,
            decided_ms: optional_int(row, 6)?,
            requests: count(7)?,
            errors: count(8)?,
            slow: count(9)?,
        },
    ))
}

impl CanaryStatus {
    fn counts(&self) -> Counts {
        Counts { requests: self.requests, errors: self.errors, slow: self.slow }
    }
}

impl Registry {
    /// Every component's latest canary, with the fleet's counts.
    pub async fn canaries(&self) -> Result<HashMap<String, CanaryStatus>, DbError> {
        let rows = self.database().query(&format!("{SELECT}{GROUP}"), Vec::new()).await?;
        rows.rows.iter().map(|row| status(row)).collect()
    }

    /// Add what `replica` counted for the canary of `name` that started at
    /// `started_ms`.
    pub async fn add_counts(&self, name: &str, started_ms: i64, replica: &str, delta: Counts) -> Result<(), DbError> {
        self.database()
            .execute(
                "INSERT INTO canary_counts (name, started_ms, replica, requests, errors, slow) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, started_ms, replica) DO UPDATE SET \
                 requests = canary_counts.requests + excluded.requests, \
                 errors = canary_counts.errors + excluded.errors, slow = canary_counts.slow + excluded.slow",
                vec![
                    Value::Text(name.into()),
                    Value::Integer(started_ms),
                    Value::Text(replica.into()),
                    Value::Integer(delta.requests as i64),
                    Value::Integer(delta.errors as i64),
                    Value::Integer(delta.slow as i64),
                ],
            )
            .await
            .map(drop)
    }

    /// Decide the running canary of `name`, if it still runs: `decide`
    /// sees it with the fleet's counts, with its row locked, so one replica
    /// decides at a time and a decision is made once. What was decided.
    pub async fn decide(
        &self,
        name: &str,
        decide: impl FnOnce(&CanaryStatus) -> Verdict,
    ) -> Result<Option<(CanaryStatus, Verdict)>, DbError> {
        let mut tx = self.database().begin().await?;
        let Some(canary) = lock_running(&mut tx, name).await? else { return Ok(None) };
        let verdict = decide(&canary);
        match &verdict {
            Verdict::Watch => return Ok(None),
            Verdict::Promote(reason) => promote(&mut tx, name, &canary.digest, reason).await?,
            Verdict::RollBack(reason) => end(&mut tx, name, State::RolledBack, reason).await?,
        }
        tx.notify(CHANNEL).await?;
        tx.commit().await?;
        Ok(Some((canary, verdict)))
    }

    /// Abort the running canary of `name` by hand.
    pub async fn abort(&self, name: &str, reason: &str) -> Result<bool, DbError> {
        let mut tx = self.database().begin().await?;
        if lock_running(&mut tx, name).await?.is_none() {
            return Ok(false);
        }
        end(&mut tx, name, State::Aborted, reason).await?;
        tx.notify(CHANNEL).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The running canary of `name`, its row (and its component's active row)
/// locked until `tx` ends.
async fn lock_running(tx: &mut Transaction, name: &str) -> Result<Option<CanaryStatus>, DbError> {
    // The component's active row first, as an upload or an activation
    // takes it first: one order, so they wait for each other instead of
    // deadlocking.
    tx.execute("UPDATE component_active SET name = name WHERE name = $1", vec![Value::Text(name.into())]).await?;
    let locked = tx
        .query(
            "UPDATE component_canary SET state = state WHERE name = $1 AND state = 'running' RETURNING name",
            vec![Value::Text(name.into())],
        )
        .await?;
    if locked.rows.is_empty() {
        return Ok(None);
    }
    let rows = tx.query(&format!("{SELECT} WHERE c.name = $1{GROUP}"), vec![Value::Text(name.into())]).await?;
    rows.rows.first().map(|row| status(row).map(|(_, canary)| canary)).transpose()
}

/// Start a canary of `digest` (stored in `tx`) at `percent`, in place of
/// any earlier one of `name`; refused for the active version itself.
pub(super) async fn start(tx: &mut Transaction, name: &str, digest: &str, percent: u8) -> Result<(), PublishError> {
    let active =
        tx.query("SELECT digest FROM component_active WHERE name = $1", vec![Value::Text(name.into())]).await?;
    if active.rows.first().map(|row| text(row, 0)).transpose()?.as_deref() == Some(digest) {
        return Err(CanaryError::AlreadyActive(format!("sha256:{digest}")).into());
    }
    tx.execute("DELETE FROM canary_counts WHERE name = $1", vec![Value::Text(name.into())]).await?;
    tx.execute(
        "INSERT INTO component_canary (name, digest, percent, state, reason, started_ms, decided_ms) \
         VALUES ($1, $2, $3, 'running', NULL, $4, NULL) ON CONFLICT (name) DO UPDATE SET \
         digest = excluded.digest, percent = excluded.percent, state = 'running', reason = NULL, \
         started_ms = excluded.started_ms, decided_ms = NULL",
        vec![
            Value::Text(name.into()),
            Value::Text(digest.into()),
            Value::Integer(percent.into()),
            Value::Integer(now_ms()),
        ],
    )
    .await?;
    Ok(())
}

/// End the running canary of `name`, if one runs, as `state` for `reason`.
pub(super) async fn end(tx: &mut Transaction, name: &str, state: State, reason: &str) -> Result<(), DbError> {
    tx.execute(
        "UPDATE component_canary SET state = $2, reason = $3, decided_ms = $4 WHERE name = $1 AND state = 'running'",
        vec![
            Value::Text(name.into()),
            Value::Text(state.as_str().into()),
            Value::Text(reason.into()),
            Value::Integer(now_ms()),
        ],
    )
    .await
    .map(drop)
}

/// Make the canary `digest` the active version; the highest activated
/// version rises to its signed version if that is higher.
async fn promote(tx: &mut Transaction, name: &str, digest: &str, reason: &str) -> Result<(), DbError> {
    let versions = tx
        .query(
            "SELECT (SELECT highest_version FROM component_active WHERE name = $1), \
             (SELECT version FROM component_versions WHERE name = $1 AND digest = $2)",
            vec![Value::Text(name.into()), Value::Text(digest.into())],
        )
        .await?;
    let row = versions.rows.first().ok_or_else(|| DbError::Other("no row from a scalar select".into()))?;
    let highest = optional_int(row, 0)?.max(optional_int(row, 1)?);
    activate(tx, name, digest, highest).await?;
    end(tx, name, State::Promoted, reason).await
}

impl Fleet {
    /// Whether this replica runs a canary of any component.
    pub(super) fn runs_a_canary(&self) -> bool {
        self.runtime.components().iter().any(|c| self.runtime.canary(&c.name).is_some())
    }

    /// Flush what this replica counted for each canary it runs, then judge
    /// it on the fleet's counts. A failure only delays both to the next tick.
    pub(super) async fn judge_canaries(&self) -> Result<(), FleetError> {
        let counting: Vec<(String, Counting)> = {
            let counting = self.canary_counts.lock().unwrap_or_else(PoisonError::into_inner);
            counting.iter().map(|(name, counting)| (name.clone(), *counting)).collect()
        };
        for (name, counting) in counting {
            let Some(canary) = self.runtime.canary(&name) else { continue };
            let now = canary.loaded.tally.read();
            let delta = now.since(counting.flushed);
            if !delta.is_zero() {
                self.registry.add_counts(&name, counting.started_ms, &self.settings.replica, delta).await?;
                let mut all = self.canary_counts.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = all.get_mut(&name).filter(|c| c.started_ms == counting.started_ms) {
                    entry.flushed = now;
                }
            }
            let objectives = &self.settings.objectives;
            let decided = self
                .registry
                .decide(&name, |canary| {
                    let elapsed = Duration::from_millis((now_ms() - canary.started_ms).max(0) as u64);
                    judge(canary.counts(), elapsed, objectives)
                })
                .await?;
            match decided {
                Some((canary, Verdict::Promote(reason))) => {
                    tracing::info!(component = name, digest = canary.digest, reason, "canary promoted");
                }
                Some((canary, Verdict::RollBack(reason))) => {
                    tracing::warn!(component = name, digest = canary.digest, reason, "canary rolled back");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Serve the registry's running canary of `name` here, or end the one
    /// served here when none runs. A canary this replica cannot load is
    /// not served here (the stable version serves all) and is said once.
    /// `preloaded`: the canary's version, when the caller has just loaded it.
    pub(super) async fn follow_canary(
        &self,
        name: &str,
        latest: Option<&CanaryStatus>,
        preloaded: Option<Arc<LoadedComponent>>,
    ) {
        let wanted = latest.filter(|c| c.state == State::Running);
        let served = self.runtime.canary(name);
        let Some(wanted) = wanted else {
            if served.is_some() {
                let _ = self.runtime.set_canary(name, None);
            }
            self.canary_counts.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
            return;
        };
        let same = served.as_ref().is_some_and(|s| s.loaded.digest == wanted.digest && s.percent == wanted.percent);
        let counting = self
            .canary_counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|counting| counting.started_ms == wanted.started_ms);
        if same && counting {
            return;
        }
        let loaded = match (served.filter(|s| s.loaded.digest == wanted.digest), preloaded) {
            (Some(served), _) => Ok(served.loaded.clone()),
            (None, Some(preloaded)) if preloaded.digest == wanted.digest => Ok(preloaded),
            (None, _) => self.load_stored(name, &wanted.digest).await,
        };
        match loaded {
            Ok(loaded) => {
                let counted = loaded.tally.read();
                let canary = Canary { loaded, percent: wanted.percent };
                if self.runtime.set_canary(name, Some(canary)).is_ok() {
                    self.canary_counts
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(name.to_string(), Counting { started_ms: wanted.started_ms, flushed: counted });
                    tracing::info!(
                        component = name,
                        digest = wanted.digest,
                        percent = wanted.percent,
                        "canary serving"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(component = name, digest = wanted.digest, error = %err, "cannot load the canary; the stable version serves every request here");
                // Not an older canary either (one the registry replaced):
                // the stable version alone, and nothing counted; tried
                // again at the next sync.
                let _ = self.runtime.set_canary(name, None);
                self.canary_counts.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
            }
        }
    }

    /// Promote the running canary of `name` now, by hand.
    pub async fn promote_canary(&self, name: &str) -> Result<(), FleetError> {
        self.known(name)?;
        let decided = self.registry.decide(name, |_| Verdict::Promote("promoted by hand".into())).await?;
        decided.map(drop).ok_or_else(|| FleetError::Canary(CanaryError::NotRunning(name.into())))?;
        self.sync_after_decision().await;
        Ok(())
    }

    /// Abort the running canary of `name` now, by hand.
    pub async fn abort_canary(&self, name: &str) -> Result<(), FleetError> {
        self.known(name)?;
        if !self.registry.abort(name, "aborted by hand").await? {
            return Err(FleetError::Canary(CanaryError::NotRunning(name.into())));
        }
        self.sync_after_decision().await;
        Ok(())
    }

    fn known(&self, name: &str) -> Result<(), FleetError> {
        match self.runtime.component(name) {
            Some(_) => Ok(()),
            None => Err(FleetError::Unknown(name.into())),
        }
    }

    /// Act on a decision committed here at once; a failure only leaves it
    /// to the next sync (the decision stands: never answered as failed).
    async fn sync_after_decision(&self) {
        if let Err(err) = self.sync().await {
            tracing::warn!(error = %err, "cannot act on the canary decision yet; the next sync will");
        }
    }
}
