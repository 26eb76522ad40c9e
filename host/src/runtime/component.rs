//! A loaded handler component: compiled (or deserialized from a matching
//! precompiled artifact) once, linked once, checked against the
//! `pet-handler` world, ready to instantiate per request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::tally::Tally;
use crate::host_api::RequestState;
use crate::host_api::bindings::PetHandlerPre;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read component {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("component {name} is not a valid component: {reason}")]
    Compile { name: String, reason: String },
    #[error("component {name} does not fit the pet-handler world: {reason}")]
    Mismatch { name: String, reason: String },
}

/// How the component's machine code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Precompiled,
}

/// A component ready to serve.
pub struct LoadedComponent {
    /// The file name without extension, e.g. `pets`.
    pub name: Arc<str>,
    /// sha256 of the component's bytes, hex.
    pub digest: String,
    /// `sha256:<digest>`, as answers name the version that made them.
    pub version: bytes::Bytes,
    pub loaded_at: SystemTime,
    pub origin: Origin,
    /// Imports resolved and exports checked: instantiation is all that is left.
    pub pre: PetHandlerPre<RequestState>,
    /// What this version answered here.
    pub tally: Tally,
}

impl LoadedComponent {
    /// Load `path`, using `<name>.<digest>.cwasm` beside it when one exists
    /// and matches this engine; compiling otherwise.
    pub fn from_file(
        engine: &Engine,
        linker: &Linker<RequestState>,
        path: &Path,
    ) -> Result<LoadedComponent, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let digest = sha256_hex(&bytes);
        let artifact = precompiled_path(path, &name, &digest);
        if artifact.exists() {
            // SAFETY: the artifact was written by `petstore compile` into the
            // components folder, which is as trusted as this binary; its
            // name binds it to the exact bytes of `path`, and wasmtime
            // refuses artifacts from another engine version or configuration.
            match unsafe { Component::deserialize_file(engine, &artifact) } {
                Ok(component) => return LoadedComponent::link(linker, &name, digest, Origin::Precompiled, component),
                Err(err) => tracing::warn!(
                    component = name,
                    artifact = %artifact.display(),
                    error = format!("{err:#}"),
                    "precompiled artifact does not fit this engine; compiling instead"
                ),
            }
        }
        LoadedComponent::from_bytes(engine, linker, &name, &bytes)
    }

    /// Compile `bytes` and check them against the world.
    pub fn from_bytes(
        engine: &Engine,
        linker: &Linker<RequestState>,
        name: &str,
        bytes: &[u8],
    ) -> Result<LoadedComponent, LoadError> {
        let component = Component::new(engine, bytes)
            .map_err(|e| LoadError::Compile { name: name.to_string(), reason: format!("{e:#}") })?;
        LoadedComponent::link(linker, name, sha256_hex(bytes), Origin::Compiled, component)
    }

    /// Load `artifact`, the compiled form of `bytes`, and check it against
    /// the world.
    ///
    /// # Safety
    /// `artifact` is native code that will run: the caller must know that
    /// this service compiled it from exactly `bytes` (the fleet's artifact
    /// key vouches for it). wasmtime refuses one of another engine version
    /// or configuration.
    pub unsafe fn from_artifact(
        engine: &Engine,
        linker: &Linker<RequestState>,
        name: &str,
        bytes: &[u8],
        artifact: &[u8],
    ) -> Result<LoadedComponent, LoadError> {
        // SAFETY: the caller's promise above.
        let component = unsafe { Component::deserialize(engine, artifact) }
            .map_err(|e| LoadError::Compile { name: name.to_string(), reason: format!("{e:#}") })?;
        LoadedComponent::link(linker, name, sha256_hex(bytes), Origin::Precompiled, component)
    }

    /// The compiled artifact of this component, to cache and to share with
    /// other replicas of the same image.
    pub fn artifact(&self) -> Option<Vec<u8>> {
        self.pre.instance_pre().component().serialize().ok()
    }

    fn link(
        linker: &Linker<RequestState>,
        name: &str,
        digest: String,
        origin: Origin,
        component: Component,
    ) -> Result<LoadedComponent, LoadError> {
        let mismatch = |e: wasmtime::Error| LoadError::Mismatch { name: name.to_string(), reason: format!("{e:#}") };
        let instance_pre = linker.instantiate_pre(&component).map_err(mismatch)?;
        let pre = PetHandlerPre::new(instance_pre).map_err(mismatch)?;
        Ok(LoadedComponent {
            name: Arc::from(name),
            version: format!("sha256:{digest}").into(),
            digest,
            loaded_at: SystemTime::now(),
            origin,
            pre,
            tally: Tally::default(),
        })
    }
}

/// Where `petstore compile` puts the artifact of a component file: beside
/// it, named after the source's digest, so a stale artifact is never used.
pub fn precompiled_path(source: &Path, name: &str, digest: &str) -> PathBuf {
    source.with_file_name(format!("{name}.{}.cwasm", &digest[..16]))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
