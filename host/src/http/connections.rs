//! Client connections: accepts them up to a cap, serves HTTP/1.1 on each,
//! closes the ones that are slow or idle too long, and drains them at
//! shutdown.
//!
//! A connection is in one of three stages, and only two have a deadline:
//! - receiving a header: the first request's header must arrive within
//!   `HEADER_TIMEOUT_MS` of the accept, a later one's within
//!   `HEADER_TIMEOUT_MS` of its first byte; else the connection is closed;
//! - idle between keep-alive requests: closed after `KEEPALIVE_TIMEOUT_MS`;
//! - busy (the router has the request): the body's own deadline
//!   (`BODY_TIMEOUT_MS`, in dispatch) and the handler's apply.
//!
//! At `MAX_CONNECTIONS` open connections a newly accepted client takes the
//! place of the connection idle the longest, which is closed; when none is
//! idle, it waits until one closes, which the deadlines above bound by
//! `HEADER_TIMEOUT_MS` for clients that hold a slot without sending.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::telemetry::Metrics;

/// Bounds on what clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once (`MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// From a request's first byte to the end of its header (`HEADER_TIMEOUT_MS`).
    pub header_timeout: Duration,
    /// Between keep-alive requests, and before the first (`KEEPALIVE_TIMEOUT_MS`).
    pub keepalive_timeout: Duration,
}

/// Serve `router` on `listener` until `closing` resolves, then stop
/// accepting, ask every connection to finish its request and close, and
/// return once all have closed (the caller bounds how long it waits).
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    closing: impl Future<Output = ()>,
) {
    metrics.known_listener(name);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let open = Arc::new(OpenConnections::default());
    let (close_all, close_signal) = watch::channel(false);
    let mut closing = pin!(closing);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut closing => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics.http_connection_cap_reached.with_label_values(&[name]).inc();
                if !open.close_longest_idle() {
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max_connections,
                        "every connection slot is taken by a busy or slow client; a new client waits for one to close"
                    );
                }
                tokio::select! {
                    _ = &mut closing => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let activity = open.add();
        let connection = Connection {
            name,
            peer,
            router: router.clone(),
            limits,
            metrics: metrics.clone(),
            close_signal: close_signal.clone(),
            activity,
            open: open.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.run(stream));
    }
    drop(listener);
    let _ = close_all.send(true);
    // Every open connection holds one slot: all slots back means all closed.
    let _ = slots.acquire_many(limits.max_connections).await;
}

/// The open connections' activity, to find the one idle the longest.
#[derive(Default)]
struct OpenConnections {
    by_id: Mutex<(u64, HashMap<u64, Arc<Activity>>)>,
}

impl OpenConnections {
    fn add(&self) -> Arc<Activity> {
        let mut guard = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, by_id) = &mut *guard;
        *next += 1;
        let activity = Arc::new(Activity::new(*next));
        by_id.insert(*next, activity.clone());
        activity
    }

    fn remove(&self, activity: &Activity) {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner).1.remove(&activity.id);
    }

    /// Ask the connection idle between requests for the longest to close;
    /// whether there was one.
    fn close_longest_idle(&self) -> bool {
        let guard = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let longest = guard
            .1
            .values()
            .filter_map(|activity| activity.idle_since().map(|since| (since, activity)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, activity)) => {
                activity.make_room();
                true
            }
            None => false,
        }
    }
}

/// Accepting fails for reasons of the moment (out of file descriptors, a
/// connection reset before it was taken): say so and keep serving.
async fn accept_failed(err: &io::Error) {
    tracing::warn!(error = %err, "cannot accept a connection");
    if matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
    {
        // Out of descriptors: give closing connections a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One client connection and what it needs.
struct Connection {
    /// The listener's name in metrics (`public`, `admin`, `metrics`).
    name: &'static str,
    /// The client's address.
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    /// Becomes `true` when the server shuts down.
    close_signal: watch::Receiver<bool>,
    activity: Arc<Activity>,
    /// Where `activity` is registered until the connection ends.
    open: Arc<OpenConnections>,
    /// Returned to the cap when the connection ends.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let open = self.metrics.http_connections_open.with_label_values(&[self.name]);
        open.inc();
        let activity = self.activity.clone();
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
        let service = Marked { router: self.router.clone(), activity: activity.clone(), peer: self.peer };
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The deadlines are ours (below): hyper's one header timeout would
        // also cut idle keep-alive connections at the same bound.
        builder.header_read_timeout(None).keep_alive(true);
        let mut conn = pin!(builder.serve_connection(io, service));
        let mut closing = false;
        // Checked lazily: a stage change does not wake this task (that cost
        // every request three wake-ups and two timers). Instead the check
        // runs at least every `shortest` (see `Activity::next_check`), and a
        // stage that starts now has a deadline at least `shortest` away, so
        // no deadline is ever checked late.
        let check = tokio::time::sleep(self.limits.shortest());
        let mut check = pin!(check);
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    break;
                }
                _ = self.close_signal.wait_for(|closing| *closing), if !closing => {
                    closing = true;
                    // Finishes a request in progress, then closes.
                    conn.as_mut().graceful_shutdown();
                }
                _ = activity.make_room.notified() => {
                    if !closing {
                        closing = true;
                        self.metrics.http_connections_closed.with_label_values(&[self.name, "reclaimed"]).inc();
                        conn.as_mut().graceful_shutdown();
                    }
                }
                _ = check.as_mut(), if !closing => {
                    if let Some(reason) = activity.expired(&self.limits) {
                        self.metrics.http_connections_closed.with_label_values(&[self.name, reason]).inc();
                        tracing::debug!(reason, "closing a connection that used up its time");
                        break;
                    }
                    check.as_mut().reset(activity.next_check(&self.limits));
                }
            }
        }
        open.dec();
        self.open.remove(&activity);
    }
}

impl ConnectionLimits {
    /// The shortest time a stage with a deadline lasts.
    fn shortest(&self) -> Duration {
        self.header_timeout.min(self.keepalive_timeout)
    }
}

/// Where a connection is in its requests, and since when.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Idle(Instant),
    ReceivingHeader(Instant),
    Busy,
}

struct Activity {
    /// Its key in [`OpenConnections`].
    id: u64,
    stage: Mutex<Stage>,
    /// Set (and the connection woken) when it must close to make room for
    /// a new one.
    must_make_room: AtomicBool,
    make_room: Notify,
}

impl Activity {
    /// A new connection: its first header is due `HEADER_TIMEOUT_MS` from now.
    fn new(id: u64) -> Activity {
        Activity {
            id,
            stage: Mutex::new(Stage::ReceivingHeader(Instant::now())),
            must_make_room: AtomicBool::new(false),
            make_room: Notify::new(),
        }
    }

    fn set(&self, stage: Stage) {
        *self.stage.lock().unwrap_or_else(PoisonError::into_inner) = stage;
    }

    /// Bytes arrived: an idle connection starts receiving a header.
    fn received(&self) {
        let mut stage = self.stage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Stage::Idle(_) = *stage {
            *stage = Stage::ReceivingHeader(Instant::now());
        }
    }

    /// Since when it has been idle between requests, if it is.
    fn idle_since(&self) -> Option<Instant> {
        match *self.stage.lock().unwrap_or_else(PoisonError::into_inner) {
            Stage::Idle(since) if !self.must_make_room.load(Ordering::Relaxed) => Some(since),
            _ => None,
        }
    }

    fn make_room(&self) {
        self.must_make_room.store(true, Ordering::Relaxed);
        self.make_room.notify_one();
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match *self.stage.lock().unwrap_or_else(PoisonError::into_inner) {
            Stage::Idle(since) => Some(since + limits.keepalive_timeout),
            Stage::ReceivingHeader(since) => Some(since + limits.header_timeout),
            Stage::Busy => None,
        }
    }

    /// When to check again: the current stage's deadline, but no later than
    /// [`ConnectionLimits::shortest`] from now, the soonest a stage that
    /// begins after this check can expire.
    fn next_check(&self, limits: &ConnectionLimits) -> Instant {
        let latest = Instant::now() + limits.shortest();
        self.deadline(limits).map_or(latest, |deadline| deadline.min(latest))
    }

    /// Which deadline has passed, if one has.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let stage = *self.stage.lock().unwrap_or_else(PoisonError::into_inner);
        let passed = self.deadline(limits).is_some_and(|deadline| deadline <= Instant::now());
        match stage {
            Stage::Idle(_) if passed => Some("idle_timeout"),
            Stage::ReceivingHeader(_) if passed => Some("header_timeout"),
            _ => None,
        }
    }
}

/// The socket, reporting to [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router, marking the connection busy while it answers a request and
/// idle again once the answer is made; each request carries the client's
/// address (axum's `ConnectInfo`).
#[derive(Clone)]
struct Marked {
    router: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for Marked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.activity.set(Stage::Busy);
        let (router, activity) = (self.router.clone(), self.activity.clone());
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        Box::pin(async move {
            let answered = router.oneshot(req).await;
            activity.set(Stage::Idle(Instant::now()));
            answered
        })
    }
}
