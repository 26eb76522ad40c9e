//! What one version of a component answered on this replica: requests,
//! 5xx answers (its own, a trap or a deadline) and answers slower than the
//! canary objective. The fleet sums these across replicas to judge a
//! canary (`fleet/canary.rs`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{Histogram, IntCounter};

/// Counts since the version was loaded here; they only grow.
#[derive(Debug, Default)]
pub struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    slow: AtomicU64,
    /// Its exported series, looked up once rather than by label on every
    /// request.
    exported: OnceLock<Series>,
}

/// A version's series of `petstore_component_version_*`.
#[derive(Debug)]
pub struct Series {
    pub requests: IntCounter,
    pub errors: IntCounter,
    pub duration: Histogram,
}

/// A reading of a [`Tally`], or the difference of two.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    pub slow: u64,
}

impl Tally {
    /// Count one answer, which took `took`; `series` gives the version's
    /// series the first time.
    pub fn record(&self, failed: bool, slow: bool, took: Duration, series: impl FnOnce() -> Series) {
        let exported = self.exported.get_or_init(series);
        self.requests.fetch_add(1, Ordering::Relaxed);
        exported.requests.inc();
        exported.duration.observe(took.as_secs_f64());
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
            exported.errors.inc();
        }
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
        }
    }
}

impl Counts {
    /// What was counted since `earlier`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            slow: self.slow.saturating_sub(earlier.slow),
        }
    }

    pub fn is_zero(self) -> bool {
        self == Counts::default()
    }
}
