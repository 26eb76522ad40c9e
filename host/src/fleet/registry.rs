//! The component registry's tables: every stored version of each
//! component, which one is active (and the highest signed version ever
//! activated), and what each replica reports it runs. They live where no
//! component's statement reaches (PostgreSQL: schema `petstore_registry`;
//! SQLite: a file of their own). The same SQL runs on both.

use std::collections::HashMap;

use thiserror::Error;

use super::canary::{self, CanaryError, State};
use super::signature::SignatureError;
use crate::storage::column::{int, optional_blob, optional_int, optional_text, text};
use crate::storage::{Database, DbError, Transaction, Value};

/// The notification channel that wakes every replica when an active version
/// changes (PostgreSQL's NOTIFY; nothing on SQLite, where one host runs).
pub const CHANNEL: &str = "petstore_components";

/// A version to store and activate.
pub struct Upload<'a> {
    pub name: &'a str,
    pub digest: &'a str,
    pub bytes: &'a [u8],
    /// The minisign signature's text, when signed.
    pub signature: Option<&'a str>,
    /// The version the signature names, when signed.
    pub version: Option<i64>,
    pub uploaded_by: &'a str,
    /// The compiled artifact and its MAC, when there is one to share.
    pub artifact: Option<(Vec<u8>, String)>,
    /// Start it as a canary serving this percent of requests, instead of
    /// making it active.
    pub canary: Option<u8>,
}

/// A stored version, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    pub digest: String,
    pub size: i64,
    pub uploaded_at: String,
    pub uploaded_by: String,
    pub signed: bool,
    /// The version its signature names.
    pub version: Option<i64>,
}

/// A stored version's bytes, signature and version, and the compiled artifact.
pub struct Stored {
    pub bytes: Vec<u8>,
    pub signature: Option<String>,
    pub version: Option<i64>,
    pub artifact: Option<(Vec<u8>, String)>,
}

/// Why an upload was not stored.
#[derive(Debug, Error)]
pub enum PublishError {
    /// Its version is below the highest activated, or names other bytes.
    #[error(transparent)]
    Stale(SignatureError),
    #[error(transparent)]
    Canary(#[from] CanaryError),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Where a replica stands with one component's active version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Converged,
    Loading,
    Failed,
}

impl ReplicaState {
    /// As the registry stores it (`replica_components.state`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Converged => "converged",
            ReplicaState::Loading => "loading",
            ReplicaState::Failed => "failed",
        }
    }

    pub const ALL: [ReplicaState; 3] = [ReplicaState::Converged, ReplicaState::Loading, ReplicaState::Failed];

    fn parse(text: &str) -> Option<ReplicaState> {
        ReplicaState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The admin API says it as the registry stores it.
impl serde::Serialize for ReplicaState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What a replica last reported for one component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub replica: String,
    /// What it serves.
    pub digest: String,
    /// The active digest its `state` is about: a failure to reach one
    /// version says nothing about the next.
    pub target: String,
    pub state: ReplicaState,
    pub reason: Option<String>,
    pub heartbeat_ms: i64,
}

#[derive(Clone)]
pub struct Registry {
    db: Database,
}

impl Registry {
    pub fn new(db: Database) -> Registry {
        Registry { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The active digest of each component that has one.
    pub async fn active(&self) -> Result<HashMap<String, String>, DbError> {
        let rows = self.db.query("SELECT name, digest FROM component_active", Vec::new()).await?;
        rows.rows.iter().map(|row| Ok((text(row, 0)?, text(row, 1)?))).collect()
    }

    /// One stored version, if it is there.
    pub async fn fetch(&self, name: &str, digest: &str) -> Result<Option<Stored>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT bytes, signature, version, artifact, artifact_mac FROM component_versions \
                 WHERE name = $1 AND digest = $2",
                vec![Value::Text(name.into()), Value::Text(digest.into())],
            )
            .await?;
        let Some(row) = rows.rows.first() else { return Ok(None) };
        let bytes = optional_blob(row, 0)?.ok_or_else(|| DbError::Other("a stored component without bytes".into()))?;
        let artifact = optional_blob(row, 3)?.zip(optional_text(row, 4)?);
        Ok(Some(Stored { bytes, signature: optional_text(row, 1)?, version: optional_int(row, 2)?, artifact }))
    }

    /// Store `upload` (once per digest), make it the active version (or
    /// start it as a canary) and wake every replica, all in one
    /// transaction; then keep only the `kept` most recent versions besides
    /// the active one and a running canary. A signed upload's version
    /// must be at least the highest ever activated, and a version names one
    /// build: anything else is a downgrade or a replay.
    pub async fn publish(&self, upload: &Upload<'_>, kept: u32) -> Result<(), PublishError> {
        let mut tx = self.db.begin().await?;
        // Taking the component's row first makes concurrent uploads of it
        // check their versions one after the other.
        let highest = tx
            .query(
                "UPDATE component_active SET name = name WHERE name = $1 RETURNING highest_version",
                vec![Value::Text(upload.name.into())],
            )
            .await?;
        let highest = match highest.rows.first() {
            Some(row) => optional_int(row, 0)?,
            None => None,
        };
        if let Some(version) = upload.version {
            if let Some(highest) = highest.filter(|highest| version < *highest) {
                return Err(PublishError::Stale(SignatureError::Older { version, highest }));
            }
            let reused = tx
                .query(
                    "SELECT 1 FROM component_versions WHERE name = $1 AND version = $2 AND digest <> $3",
                    vec![Value::Text(upload.name.into()), Value::Integer(version), Value::Text(upload.digest.into())],
                )
                .await?;
            if !reused.rows.is_empty() {
                return Err(PublishError::Stale(SignatureError::Reused { version }));
            }
        }
        insert_version(&mut tx, upload).await?;
        match upload.canary {
            Some(percent) => canary::start(&mut tx, upload.name, upload.digest, percent).await?,
            None => {
                activate(&mut tx, upload.name, upload.digest, highest.max(upload.version)).await?;
                canary::end(&mut tx, upload.name, State::Aborted, "ended: another version was uploaded").await?;
            }
        }
        tx.execute(
            "DELETE FROM component_versions WHERE name = $1 AND digest <> $2 \
             AND digest NOT IN (SELECT digest FROM component_active WHERE name = $1) \
             AND digest NOT IN (SELECT digest FROM component_canary WHERE name = $1 AND state = 'running') \
             AND digest NOT IN \
             (SELECT digest FROM component_versions WHERE name = $1 ORDER BY uploaded_at DESC, digest LIMIT $3)",
            vec![Value::Text(upload.name.into()), Value::Text(upload.digest.into()), Value::Integer(kept.into())],
        )
        .await?;
        tx.notify(CHANNEL).await?;
        Ok(tx.commit().await?)
    }

    /// Make a stored version the active one and wake every replica (an
    /// explicit rollback: the highest activated version stays); `false`
    /// when no such version is stored.
    pub async fn activate(&self, name: &str, digest: &str) -> Result<bool, DbError> {
        let mut tx = self.db.begin().await?;
        let stored = tx
            .query(
                "SELECT 1 FROM component_versions WHERE name = $1 AND digest = $2",
                vec![Value::Text(name.into()), Value::Text(digest.into())],
            )
            .await?;
        if stored.rows.is_empty() {
            return Ok(false);
        }
        activate(&mut tx, name, digest, None).await?;
        canary::end(&mut tx, name, State::Aborted, "ended: a version was activated by hand").await?;
        tx.notify(CHANNEL).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The first time a component is seen, store the image's version and make
    /// it active; a component that already has an active version keeps it.
    pub async fn seed(&self, upload: &Upload<'_>) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        insert_version(&mut tx, upload).await?;
        tx.execute(
            "INSERT INTO component_active (name, digest, activated_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            vec![Value::Text(upload.name.into()), Value::Text(upload.digest.into()), Value::Text(now_rfc3339())],
        )
        .await?;
        tx.commit().await
    }

    /// The stored versions of `name`, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<Version>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT digest, size, uploaded_at, uploaded_by, signature IS NOT NULL, version FROM component_versions \
                 WHERE name = $1 ORDER BY uploaded_at DESC, digest",
                vec![Value::Text(name.into())],
            )
            .await?;
        rows.rows
            .iter()
            .map(|row| {
                Ok(Version {
                    digest: text(row, 0)?,
                    size: int(row, 1)?,
                    uploaded_at: text(row, 2)?,
                    uploaded_by: text(row, 3)?,
                    signed: matches!(row.get(4), Some(Value::Boolean(true) | Value::Integer(1))),
                    version: optional_int(row, 5)?,
                })
            })
            .collect()
    }

    /// Record what `replica` runs, with a heartbeat of `now_ms`.
    pub async fn report(&self, replica: &str, rows: &[(String, Report)], now_ms: i64) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        for (name, report) in rows {
            tx.execute(
                "INSERT INTO replica_components (replica, name, digest, target, state, reason, heartbeat_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (replica, name) DO UPDATE SET \
                 digest = excluded.digest, target = excluded.target, state = excluded.state, \
                 reason = excluded.reason, heartbeat_ms = excluded.heartbeat_ms",
                vec![
                    Value::Text(replica.into()),
                    Value::Text(name.clone()),
                    Value::Text(report.digest.clone()),
                    Value::Text(report.target.clone()),
                    Value::Text(report.state.as_str().into()),
                    report.reason.clone().map_or(Value::Null, Value::Text),
                    Value::Integer(now_ms),
                ],
            )
            .await?;
        }
        // Replicas gone for a day are forgotten.
        tx.execute(
            "DELETE FROM replica_components WHERE heartbeat_ms < $1",
            vec![Value::Integer(now_ms - 24 * 3600 * 1000)],
        )
        .await?;
        tx.commit().await
    }

    /// What the replicas heard from since `since_ms` report, by component.
    pub async fn reports(&self, since_ms: i64) -> Result<HashMap<String, Vec<Report>>, DbError> {
        let rows = self
            .db
            .query(
                "SELECT name, replica, digest, target, state, reason, heartbeat_ms FROM replica_components \
                 WHERE heartbeat_ms >= $1 ORDER BY name, replica",
                vec![Value::Integer(since_ms)],
            )
            .await?;
        let mut by_name: HashMap<String, Vec<Report>> = HashMap::new();
        for row in &rows.rows {
            let report = Report {
                replica: text(row, 1)?,
                digest: text(row, 2)?,
                target: text(row, 3)?,
                state: ReplicaState::parse(&text(row, 4)?)
                    .ok_or_else(|| DbError::Other("replica_components.state holds an unknown state".into()))?,
                reason: optional_text(row, 5)?,
                heartbeat_ms: int(row, 6)?,
            };
            by_name.entry(text(row, 0)?).or_default().push(report);
        }
        Ok(by_name)
    }
}

async fn insert_version(tx: &mut Transaction, upload: &Upload<'_>) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO component_versions \
         (name, digest, bytes, signature, version, size, uploaded_at, uploaded_by, artifact, artifact_mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name, digest) DO NOTHING",
        vec![
            Value::Text(upload.name.into()),
            Value::Text(upload.digest.into()),
            Value::Blob(upload.bytes.to_vec()),
            upload.signature.map_or(Value::Null, |s| Value::Text(s.into())),
            upload.version.map_or(Value::Null, Value::Integer),
            Value::Integer(upload.bytes.len() as i64),
            Value::Text(now_rfc3339()),
            Value::Text(upload.uploaded_by.into()),
            upload.artifact.as_ref().map_or(Value::Null, |(artifact, _)| Value::Blob(artifact.clone())),
            upload.artifact.as_ref().map_or(Value::Null, |(_, mac)| Value::Text(mac.clone())),
        ],
    )
    .await
    .map(drop)
}

/// Make `digest` active; `highest`, when given, is the new highest version
/// activated (`None` keeps it).
pub(super) async fn activate(
    tx: &mut Transaction,
    name: &str,
    digest: &str,
    highest: Option<i64>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO component_active (name, digest, activated_at, highest_version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, activated_at = excluded.activated_at, \
         highest_version = COALESCE(excluded.highest_version, component_active.highest_version)",
        vec![
            Value::Text(name.into()),
            Value::Text(digest.into()),
            Value::Text(now_rfc3339()),
            highest.map_or(Value::Null, Value::Integer),
        ],
    )
    .await
    .map(drop)
}

/// Now, to the millisecond, in RFC 3339 UTC: versions uploaded in the same
/// second still sort by time.
fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
