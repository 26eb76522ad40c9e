//! Changing what the fleet serves, from the replica that took the admin
//! call: a new version (an upload), or a stored one again (a rollback).

use std::sync::Arc;

use super::registry::{Stored, Upload};
use super::{Fleet, FleetError, ReplicaState};
use crate::runtime::{LoadedComponent, sha256_hex};

impl Fleet {
    /// Make `bytes` the active version of `name` everywhere: check their
    /// signature and what it says (this component, this environment, a
    /// version no older than the newest activated), compile and type-check
    /// them here, store and activate them (waking every replica), then
    /// serve them here. With `canary`, they start as a canary serving that
    /// percent of requests instead (`canary.rs`). On any failure nothing
    /// changes anywhere.
    pub async fn publish(
        &self,
        name: &str,
        bytes: Vec<u8>,
        signature: Option<String>,
        uploaded_by: &str,
        canary: Option<u8>,
    ) -> Result<Arc<LoadedComponent>, FleetError> {
        if self.runtime.component(name).is_none() {
            return Err(FleetError::Unknown(name.into()));
        }
        let claims = self.settings.policy.verify(&bytes, signature.as_deref(), name, &self.settings.environment)?;
        let _busy = self.busy.lock().await;
        let (loaded, bytes) = self.load(name, bytes, None).await?;
        let artifact = self.settings.artifact_key.as_ref().and_then(|key| {
            let artifact = loaded.artifact()?;
            let mac = key.sign_hex(name, &loaded.digest, &artifact);
            Some((artifact, mac))
        });
        let upload = Upload {
            name,
            digest: &loaded.digest,
            bytes: &bytes,
            signature: signature.as_deref(),
            version: claims.map(|c| c.version),
            uploaded_by,
            artifact,
            canary,
        };
        self.registry.publish(&upload, self.settings.versions_kept).await?;
        let loaded = Arc::new(loaded);
        if canary.is_some() {
            let latest = self.registry.canaries().await?.remove(name);
            self.follow_canary(name, latest.as_ref(), Some(loaded.clone())).await;
            return Ok(loaded);
        }
        let installed = self.runtime.install(loaded)?;
        self.follow_canary(name, None, None).await;
        self.record(name, &installed.digest, ReplicaState::Converged, None);
        self.report_now().await;
        Ok(installed)
    }

    /// Make a stored version active everywhere (an explicit rollback, or a
    /// roll forward again), after loading it here.
    pub async fn activate(&self, name: &str, digest: &str) -> Result<Arc<LoadedComponent>, FleetError> {
        if self.runtime.component(name).is_none() {
            return Err(FleetError::Unknown(name.into()));
        }
        let _busy = self.busy.lock().await;
        let no_such = || FleetError::NoSuchVersion { name: name.into(), digest: digest.into() };
        let stored = self.registry.fetch(name, digest).await?.ok_or_else(no_such)?;
        self.check_trusted(name, digest, &stored)?;
        let (loaded, _) = self.load(name, stored.bytes, stored.artifact).await?;
        if !self.registry.activate(name, digest).await? {
            return Err(no_such());
        }
        let installed = self.runtime.install(Arc::new(loaded))?;
        self.follow_canary(name, None, None).await;
        self.record(name, digest, ReplicaState::Converged, None);
        self.report_now().await;
        Ok(installed)
    }

    /// A stored version may run here: its bytes are what the registry says
    /// they are, and either it is this image's own version of `name`, or its
    /// signature is valid for `name` in this environment and names the
    /// version the registry recorded. Whoever can write the registry can
    /// make it name another stored version, but not run bytes the pipeline
    /// did not sign for this component and this environment.
    pub(super) fn check_trusted(&self, name: &str, digest: &str, stored: &Stored) -> Result<(), FleetError> {
        if sha256_hex(&stored.bytes) != digest {
            return Err(FleetError::Refused("the stored bytes do not match their digest".into()));
        }
        if self.image.get(name).is_some_and(|image| image.digest == digest) {
            return Ok(());
        }
        let claims = self.settings.policy.verify(
            &stored.bytes,
            stored.signature.as_deref(),
            name,
            &self.settings.environment,
        )?;
        match claims {
            Some(claims) if Some(claims.version) != stored.version => Err(FleetError::Refused(format!(
                "the registry records version {:?}, the signature says {}",
                stored.version, claims.version
            ))),
            _ => Ok(()),
        }
    }
}
