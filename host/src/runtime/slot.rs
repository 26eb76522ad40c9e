//! One routed component's place in the runtime: the stable version, and
//! while a canary runs, the canary and the share of requests it gets. Each
//! swaps atomically: a request holds the version it started on.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::LoadedComponent;

/// A version serving a share of its component's requests.
pub struct Canary {
    pub loaded: Arc<LoadedComponent>,
    /// 1–99: the percent of requests it serves.
    pub percent: u8,
}

pub struct Slot {
    stable: ArcSwap<LoadedComponent>,
    canary: ArcSwapOption<Canary>,
}

impl Slot {
    pub fn new(loaded: LoadedComponent) -> Slot {
        Slot { stable: ArcSwap::from_pointee(loaded), canary: ArcSwapOption::empty() }
    }

    pub fn stable(&self) -> Arc<LoadedComponent> {
        self.stable.load_full()
    }

    pub fn canary(&self) -> Option<Arc<Canary>> {
        self.canary.load_full()
    }

    /// The version that serves the next request: the canary for about its
    /// percent of them, the stable version otherwise.
    pub fn pick(&self) -> Arc<LoadedComponent> {
        if let Some(canary) = &*self.canary.load()
            && fastrand::u8(0..100) < canary.percent
        {
            return canary.loaded.clone();
        }
        self.stable.load_full()
    }

    /// Whether `version` is one this slot serves now (stable or canary).
    pub fn serves(&self, version: &Arc<LoadedComponent>) -> bool {
        Arc::ptr_eq(&self.stable.load(), version)
            || self.canary.load().as_ref().is_some_and(|canary| Arc::ptr_eq(&canary.loaded, version))
    }

    /// Serve `loaded` as the stable version; the one it replaces.
    pub fn set_stable(&self, loaded: Arc<LoadedComponent>) -> Arc<LoadedComponent> {
        self.stable.swap(loaded)
    }

    /// Start (or change) the canary; the one it replaces.
    pub fn set_canary(&self, canary: Option<Canary>) -> Option<Arc<Canary>> {
        self.canary.swap(canary.map(Arc::new))
    }
}
