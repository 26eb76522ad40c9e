//! `petstore compile`: compile every routed component ahead of time into
//! wasmtime's serialized format, beside its source as
//! `<name>.<digest>.cwasm`, so the host starts without compiling. The
//! engine is configured exactly as the server's, so its artifacts load.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::routing::RouteTable;
use crate::runtime::{PoolLimits, build_engine, precompiled_path, sha256_hex};

/// `petstore compile`: precompile, and print each artifact written.
pub fn run(config: &Config) -> anyhow::Result<()> {
    for artifact in precompile(config)? {
        println!("{}", artifact.display());
    }
    Ok(())
}

/// Precompile and return the artifacts written.
pub fn precompile(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    let routes = RouteTable::load(&config.components_dir)?;
    let engine = build_engine(PoolLimits::from_config(config))?;
    let mut written = Vec::new();
    for (name, source) in routes.components() {
        let bytes = std::fs::read(&source).with_context(|| format!("cannot read {}", source.display()))?;
        let artifact = precompiled_path(&source, &name, &sha256_hex(&bytes));
        remove_stale(&source, &name, &artifact)?;
        let compiled = engine
            .precompile_component(&bytes)
            .map_err(|e| anyhow::anyhow!("cannot compile {}: {e:#}", source.display()))?;
        // Write then rename, so a reader never sees half an artifact.
        let partial = artifact.with_extension("cwasm.partial");
        std::fs::write(&partial, compiled).with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &artifact).with_context(|| format!("cannot write {}", artifact.display()))?;
        written.push(artifact);
    }
    Ok(written)
}

/// Remove artifacts of earlier versions of `name` (other digests).
fn remove_stale(source: &std::path::Path, name: &str, keep: &std::path::Path) -> anyhow::Result<()> {
    let dir = source.parent().unwrap_or(std::path::Path::new("."));
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if file.starts_with(&format!("{name}.")) && file.ends_with(".cwasm") && path != keep {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}
