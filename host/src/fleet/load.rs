//! Getting a version's machine code, cheapest first: this pod's cache, an
//! artifact another replica of the fleet compiled and shared through the
//! registry, or a compile (hundreds of milliseconds). Native code is loaded
//! only when the fleet's artifact key vouches for it; anything else is
//! refused, logged and counted, and the version is compiled instead.

use std::sync::Arc;

use super::artifact::ArtifactKey;
use super::cache::{Cache, Cached};
use super::{Fleet, FleetError};
use crate::runtime::{LoadedComponent, Runtime, SwapError, sha256_hex};
use crate::telemetry::Metrics;

impl Fleet {
    /// `bytes` as the component `name`, ready to install (and the bytes
    /// back); `shared`: the artifact and MAC the registry holds, if any.
    /// CPU-bound work runs on a blocking thread.
    pub(super) async fn load(
        &self,
        name: &str,
        bytes: Vec<u8>,
        shared: Option<(Vec<u8>, String)>,
    ) -> Result<(LoadedComponent, Vec<u8>), FleetError> {
        let loader = Loader {
            runtime: self.runtime.clone(),
            cache: self.cache.clone(),
            key: self.settings.artifact_key.clone(),
            metrics: self.metrics.clone(),
        };
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let loaded = loader.load(&name, &bytes, shared)?;
            Ok((loaded, bytes))
        })
        .await
        .map_err(|e| FleetError::Refused(format!("the compile task failed: {e}")))?
    }
}

/// What loading needs, owned, for a blocking thread.
struct Loader {
    runtime: Arc<Runtime>,
    cache: Arc<Cache>,
    key: Option<ArtifactKey>,
    metrics: Arc<Metrics>,
}

impl Loader {
    fn load(&self, name: &str, bytes: &[u8], shared: Option<(Vec<u8>, String)>) -> Result<LoadedComponent, SwapError> {
        let digest = sha256_hex(bytes);
        match self.cache.get(name, &digest) {
            Cached::Hit(artifact) => {
                // SAFETY: the cache hands out only what the fleet's key (or
                // this process's) vouches for: this service compiled it
                // from the bytes whose digest names it, which are `bytes`.
                match unsafe { self.runtime.load_artifact(name, bytes, &artifact) } {
                    Ok(loaded) => return Ok(loaded),
                    Err(err) => {
                        tracing::warn!(component = name, error = %err, "a cached artifact does not load; compiling")
                    }
                }
            }
            Cached::Refused => self.metrics.artifacts_refused.with_label_values(&["cache"]).inc(),
            Cached::Miss => {}
        }
        if let (Some(key), Some((artifact, mac))) = (&self.key, shared) {
            if key.verify_hex(name, &digest, &artifact, &mac) {
                // SAFETY: the fleet's artifact key proves that a replica of
                // this fleet compiled it from the bytes of this digest.
                match unsafe { self.runtime.load_artifact(name, bytes, &artifact) } {
                    Ok(loaded) => {
                        self.cache.put(name, &digest, &artifact);
                        return Ok(loaded);
                    }
                    Err(err) => {
                        tracing::info!(component = name, error = %err, "a shared artifact does not fit this engine; compiling")
                    }
                }
            } else {
                tracing::warn!(
                    component = name,
                    digest,
                    "a shared artifact is not vouched for by this fleet's key; compiling instead"
                );
                self.metrics.artifacts_refused.with_label_values(&["registry"]).inc();
            }
        }
        let loaded = self.runtime.compile(name, bytes)?;
        if let Some(artifact) = loaded.artifact() {
            self.cache.put(name, &digest, &artifact);
        }
        Ok(loaded)
    }
}
