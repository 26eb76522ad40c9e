//! For local development: poll the routed component files and publish one
//! that changed on disk (through the registry, like an upload, so the
//! change survives a restart and reaches every replica). A change is
//! applied once the file's size and modification time have held for one
//! poll, so a half-written file is not loaded; a file whose bytes equal the
//! running version is left alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Fleet;
use crate::runtime::sha256_hex;

const POLL: Duration = Duration::from_millis(300);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watch `files` (component name → path) until the task is dropped.
pub async fn watch_files(fleet: Arc<Fleet>, files: Vec<(String, PathBuf)>) {
    let mut applied: HashMap<String, Stamp> = files.iter().map(|(n, p)| (n.clone(), stamp(p))).collect();
    let mut pending: HashMap<String, Stamp> = HashMap::new();
    tracing::info!(components = files.len(), "watching component files for changes");
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        for (name, path) in &files {
            let now = stamp(path);
            if now.is_none() || applied.get(name) == Some(&now) {
                pending.remove(name);
                continue;
            }
            if pending.get(name) != Some(&now) {
                pending.insert(name.clone(), now);
                continue;
            }
            pending.remove(name);
            applied.insert(name.clone(), now);
            let Ok(bytes) = std::fs::read(path) else { continue };
            if fleet.runtime.component(name).is_some_and(|c| c.digest == sha256_hex(&bytes)) {
                continue;
            }
            if let Err(err) = fleet.publish(name, bytes, None, "file watch", None).await {
                tracing::warn!(component = name, error = %err, "the changed file was not published");
            }
        }
    }
}
