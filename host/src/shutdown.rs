//! Graceful shutdown: the signals that start it and the one state every
//! part reads. On SIGTERM or SIGINT the service goes through:
//! 1. draining: readiness answers 503 at once, but the listener keeps
//!    accepting for `SHUTDOWN_GRACE_MS`, while load balancers deregister us;
//! 2. closing: no new connections; in-flight requests finish, for at most
//!    `SHUTDOWN_DRAIN_MS`;
//! 3. exit 0.

use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

/// The shutdown's phase, as any part of the service sees it.
#[derive(Clone)]
pub struct ShutdownState(watch::Receiver<Phase>);

/// What moves the shutdown through its phases (see [`Signals::drive`]).
pub struct Shutdown(watch::Sender<Phase>);

/// A shutdown not yet begun, and the state that follows it.
pub fn channel() -> (Shutdown, ShutdownState) {
    let (phase, state) = watch::channel(Phase::Serving);
    (Shutdown(phase), ShutdownState(state))
}

impl ShutdownState {
    /// Whether shutdown has begun (readiness is then 503).
    pub fn is_draining(&self) -> bool {
        *self.0.borrow() >= Phase::Draining
    }

    /// Resolves once the shutdown has reached `target`.
    pub async fn reached(mut self, target: Phase) {
        // An error means the sender is gone: shutdown can no longer progress.
        if self.0.wait_for(|phase| *phase >= target).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// SIGTERM (what Kubernetes and container runtimes send, also to PID 1) and
/// SIGINT, caught from the moment they are installed.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Install the handlers: before anything announces readiness, so a signal
    /// that arrives early starts a graceful shutdown instead of killing the
    /// process (or, as PID 1 in a container, being ignored).
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Run the shutdown's phases on a task of its own: wait for a signal,
    /// drain for `grace`, then close.
    pub fn drive(mut self, grace: Duration, Shutdown(phase): Shutdown) {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
            let _ = phase.send(Phase::Draining);
            tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: readiness is 503, still accepting");
            tokio::time::sleep(grace).await;
            let _ = phase.send(Phase::Closing);
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            // Keep the sender alive: the phase stays readable to the end.
            std::future::pending::<()>().await;
        });
    }
}
