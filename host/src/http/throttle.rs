//! Failed admin authentications, slowed per client address: after
//! [`MAX_FAILURES`] wrong or missing tokens within [`WINDOW`], every admin
//! call from that address waits [`DELAY`] before its token is checked, one
//! at a time (a second one meanwhile is answered `429`), until the window
//! ends. A token cannot be guessed faster than one try a second per
//! address, and the right token still gets in: the admin port is reached
//! through `kubectl port-forward`, where every caller is 127.0.0.1, and an
//! attacker must not be able to lock the operators out during an incident.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures an address may have within one window before it is slowed.
pub const MAX_FAILURES: u32 = 5;
/// How long failures are remembered, counted from the first.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a slowed address's call waits before its token is checked.
pub const DELAY: Duration = Duration::from_secs(1);
/// Addresses remembered at most; the oldest windows go first.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

/// One address's failures in its current window.
#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
    /// A slowed call from this address is waiting its turn.
    waiting: bool,
}

/// What to do with a call before its token is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Check it now.
    Now,
    /// Check it after [`DELAY`], holding a [`Throttle::waiting`] guard.
    After(Duration),
    /// Another slowed call from the address is waiting: refuse this one.
    Busy,
}

impl Throttle {
    pub fn turn(&self, peer: IpAddr, now: Instant) -> Turn {
        let mut by_address = self.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        match by_address.get_mut(&peer) {
            Some(f) if f.count >= MAX_FAILURES && now < f.since + WINDOW => {
                if f.waiting {
                    Turn::Busy
                } else {
                    f.waiting = true;
                    Turn::After(DELAY)
                }
            }
            _ => Turn::Now,
        }
    }

    /// Holds `peer`'s one slowed call's turn until dropped (also when the
    /// call is abandoned while it waits).
    pub fn waiting(&self, peer: IpAddr) -> Waiting<'_> {
        Waiting { throttle: self, peer }
    }

    fn done_waiting(&self, peer: IpAddr) {
        if let Some(f) = self.by_address.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&peer) {
            f.waiting = false;
        }
    }

    /// Count one failed authentication from `peer`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let mut by_address = self.by_address.lock().unwrap_or_else(PoisonError::into_inner);
        if by_address.len() >= MAX_ADDRESSES {
            by_address.retain(|_, f| now < f.since + WINDOW);
        }
        if by_address.len() >= MAX_ADDRESSES
            && let Some(oldest) = by_address.iter().min_by_key(|(_, f)| f.since).map(|(ip, _)| *ip)
        {
            by_address.remove(&oldest);
        }
        let f = by_address.entry(peer).or_insert(Failures { since: now, count: 0, waiting: false });
        if now >= f.since + WINDOW {
            *f = Failures { since: now, count: 0, waiting: false };
        }
        f.count += 1;
    }
}

/// See [`Throttle::waiting`].
pub struct Waiting<'a> {
    throttle: &'a Throttle,
    peer: IpAddr,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.throttle.done_waiting(self.peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_slowed_after_its_failures_one_call_at_a_time_until_the_window_ends() {
        let throttle = Throttle::default();
        let (attacker, other) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(throttle.turn(attacker, start), Turn::Now);
            throttle.failed(attacker, start);
        }
        let later = start + Duration::from_secs(10);
        assert_eq!(throttle.turn(attacker, later), Turn::After(DELAY));
        let turn = throttle.waiting(attacker);
        assert_eq!(throttle.turn(attacker, later), Turn::Busy, "one slowed call at a time");
        drop(turn);
        assert_eq!(throttle.turn(attacker, later), Turn::After(DELAY));
        drop(throttle.waiting(attacker));
        assert_eq!(throttle.turn(other, start), Turn::Now, "other addresses are not affected");
        assert_eq!(throttle.turn(attacker, start + WINDOW), Turn::Now, "the window ended");
        throttle.failed(attacker, start + WINDOW);
        assert_eq!(throttle.turn(attacker, start + WINDOW), Turn::Now, "a new window counts from zero");
    }
}
