//! Warm instances (`INSTANCE_REUSE` = N > 1): an instance that answered a
//! request cleanly waits here, idle, for its component's next request, and
//! serves at most N requests in all. With N = 1 (the default) nothing is
//! kept and every request gets a fresh instance.
//!
//! The trade-off: a reused instance keeps its linear memory, so what one
//! request leaves in the guest's globals or heap, the next request to that
//! instance can see. Never kept: an instance that trapped or timed out (it
//! is not returned at all), one that left a transaction open, and one of a
//! component version that has since been swapped out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;

use super::LoadedComponent;
use crate::host_api::RequestState;
use crate::host_api::bindings::PetHandler;

/// An instance of a component, with the store it lives in.
pub struct Instance {
    pub store: Store<RequestState>,
    pub handler: PetHandler,
    /// The exact version it was instantiated from.
    pub component: Arc<LoadedComponent>,
    /// Requests it has served.
    pub served: u32,
}

pub struct WarmInstances {
    max_uses: u32,
    capacity: usize,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// By component and digest (a canary's instances wait beside its
    /// stable version's); most recently used last: the next request takes
    /// the warmest.
    by_version: HashMap<(Arc<str>, String), Vec<Instance>>,
    total: usize,
}

impl WarmInstances {
    /// Instances serve up to `max_uses` requests; at most `capacity` wait idle.
    pub fn new(max_uses: u32, capacity: usize) -> WarmInstances {
        WarmInstances { max_uses, capacity, idle: Mutex::new(Idle::default()) }
    }

    /// An idle instance of exactly this version of `component`, if any.
    pub fn take(&self, component: &Arc<LoadedComponent>) -> Option<Instance> {
        if self.max_uses <= 1 {
            return None;
        }
        let key = (component.name.clone(), component.digest.clone());
        let popped = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let popped = idle.by_version.get_mut(&key).and_then(Vec::pop);
            idle.total -= usize::from(popped.is_some());
            popped
        }?;
        // The digest names the bytes; the pointer, the very load (a version
        // loaded again after a swap back is another one, and its stale
        // instance is freed here, outside the lock: freeing resets memory).
        Arc::ptr_eq(&popped.component, component).then_some(popped)
    }

    /// Keep `instance` for a later request if it may serve another one and
    /// there is room; otherwise it is dropped and its slot freed.
    /// `is_current` tells whether its version still serves (asked only when
    /// reuse is on: it costs a lookup).
    pub fn put(&self, instance: Instance, is_current: impl FnOnce(&Arc<LoadedComponent>) -> bool) {
        let reusable = instance.served < self.max_uses
            && instance.store.data().is_between_requests()
            && is_current(&instance.component);
        if !reusable {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.total < self.capacity {
            idle.total += 1;
            let key = (instance.component.name.clone(), instance.component.digest.clone());
            idle.by_version.entry(key).or_default().push(instance);
        }
    }

    /// Drop every idle instance of `name` (its component was swapped).
    pub fn clear(&self, name: &str) {
        let mut dropped = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<_> = idle.by_version.keys().filter(|(n, _)| &**n == name).cloned().collect();
            for key in keys {
                dropped.extend(idle.by_version.remove(&key).unwrap_or_default());
            }
            idle.total -= dropped.len();
        }
        // Freeing an instance resets its memory: not while holding the lock.
        drop(dropped);
    }
}
