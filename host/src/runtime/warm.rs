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
    /// Most recently used last: the next request takes the warmest.
    by_component: HashMap<Arc<str>, Vec<Instance>>,
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
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            let mut popped = 0;
            if let Some(list) = idle.by_component.get_mut(&component.name) {
                while let Some(instance) = list.pop() {
                    popped += 1;
                    if Arc::ptr_eq(&instance.component, component) {
                        found = Some(instance);
                        break;
                    }
                    stale.push(instance);
                }
            }
            idle.total -= popped;
            found
        };
        // Freeing an instance resets its memory: not while holding the lock.
        drop(stale);
        found
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
            idle.by_component.entry(instance.component.name.clone()).or_default().push(instance);
        }
    }

    /// Drop every idle instance of `name` (its component was swapped).
    pub fn clear(&self, name: &str) {
        let dropped = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped = idle.by_component.remove(name).unwrap_or_default();
            idle.total -= dropped.len();
            dropped
        };
        drop(dropped);
    }
}
