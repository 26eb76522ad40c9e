//! Failed admin authentications, throttled per client address: after
//! [`MAX_FAILURES`] wrong or missing tokens within [`WINDOW`], every admin
//! call from that address is answered `429` until the window ends, whatever
//! token it carries, so a token cannot be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures an address may have within one window.
pub const MAX_FAILURES: u32 = 5;
/// How long failures are remembered, counted from the first.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; the oldest windows go first.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    /// Per address: when its window started, and its failures in it.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// `Err(wait)` while `peer` has used up its failures.
    pub fn check(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(&peer) {
            Some((since, count)) if *count >= MAX_FAILURES && now < *since + WINDOW => Err(*since + WINDOW - now),
            _ => Ok(()),
        }
    }

    /// Count one failed authentication from `peer`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (since, _)| now < *since + WINDOW);
        }
        if failures.len() >= MAX_ADDRESSES
            && let Some(oldest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(ip, _)| *ip)
        {
            failures.remove(&oldest);
        }
        let entry = failures.entry(peer).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let throttle = Throttle::default();
        let (attacker, other) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(throttle.check(attacker, start).is_ok());
            throttle.failed(attacker, start);
        }
        let wait = throttle.check(attacker, start + Duration::from_secs(10)).expect_err("throttled");
        assert_eq!(wait, WINDOW - Duration::from_secs(10));
        assert!(throttle.check(other, start).is_ok(), "other addresses are not affected");
        assert!(throttle.check(attacker, start + WINDOW).is_ok(), "the window ended");
        throttle.failed(attacker, start + WINDOW);
        assert!(throttle.check(attacker, start + WINDOW).is_ok(), "a new window counts from zero");
    }
}
