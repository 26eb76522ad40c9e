//! For local development: poll the routed component files and swap in one
//! that changed on disk. A change is applied once the file's size and
//! modification time have held for one poll, so a half-written file is not
//! loaded; a file whose bytes equal the running version is left alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Runtime, sha256_hex};

const POLL: Duration = Duration::from_millis(300);

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watch `files` (component name → path) until the task is dropped.
pub async fn watch_files(runtime: Arc<Runtime>, files: Vec<(String, PathBuf)>) {
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
            if runtime.component(name).is_some_and(|c| c.digest == sha256_hex(&bytes)) {
                continue;
            }
            let (runtime, name) = (runtime.clone(), name.clone());
            // Compiling is CPU-bound; the outcome is logged and counted by `replace`.
            let _ = tokio::task::spawn_blocking(move || runtime.replace(&name, &bytes)).await;
        }
    }
}
