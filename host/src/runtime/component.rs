//! A loaded handler component: compiled once, linked once, checked against
//! the `pet-handler` world, ready to instantiate per request.

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

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

/// A component ready to serve.
pub struct LoadedComponent {
    /// The file name without extension, e.g. `pets`.
    pub name: Arc<str>,
    /// Imports resolved and exports checked: instantiation is all that is left.
    pub pre: PetHandlerPre<RequestState>,
}

impl LoadedComponent {
    pub fn from_file(
        engine: &Engine,
        linker: &Linker<RequestState>,
        path: &Path,
    ) -> Result<LoadedComponent, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        LoadedComponent::from_bytes(engine, linker, &name, &bytes)
    }

    pub fn from_bytes(
        engine: &Engine,
        linker: &Linker<RequestState>,
        name: &str,
        bytes: &[u8],
    ) -> Result<LoadedComponent, LoadError> {
        let component = Component::new(engine, bytes)
            .map_err(|e| LoadError::Compile { name: name.to_string(), reason: format!("{e:#}") })?;
        let mismatch = |e: wasmtime::Error| LoadError::Mismatch { name: name.to_string(), reason: format!("{e:#}") };
        let instance_pre = linker.instantiate_pre(&component).map_err(mismatch)?;
        let pre = PetHandlerPre::new(instance_pre).map_err(mismatch)?;
        Ok(LoadedComponent { name: Arc::from(name), pre })
    }
}
