//! [`Pool<M>`]: a `bb8::Pool` with its connector's health, fair admission and the epoch
//! that retires connections made before an outage.
//!
//! - **Fair**: callers are let in first come, first served (a FIFO semaphore of
//!   `pool_size` turns in front of bb8's checkout); one who waits past `connect_timeout`
//!   gets [`Error::Timeout`] saying the pool was exhausted and how many were waiting.
//! - **Fail fast**: while the connector is down a checkout is refused at once with
//!   [`Error::Unavailable`]; one already waiting is woken and refused too. Every refusal
//!   is a cooperative await point, so a caller retrying in a loop never starves the
//!   runtime, and a refused caller may start the half-open trial that ends the outage.
//! - **No round trip while healthy** for connhub's own backends: a connection is checked
//!   locally (broken flag, epoch). A plain bb8 manager keeps its own `is_valid`.
//! - **A connection problem is not an outage**: a pooled connection that fails validation
//!   is dropped and another taken; only a fresh connection failing moves the connector down.
//! - **Nor is a capacity limit**: a fresh connection refused while the pool's own
//!   connections work (a server at `maxclients`, a proxy's cap) limits the pool to those;
//!   callers wait their turn on them, and the health engine grows the pool back one
//!   connection at a time as the server accepts more.

mod backend;
mod guard;
mod hook;
mod leak;
pub(crate) mod shared;
mod streams;
mod tracked;

use std::any::Any;
use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::future::Future;

use tokio::sync::broadcast;
use tokio::time::Instant;

pub(crate) use backend::Plain;
pub use backend::{Backend, Bb8Manager, ConnectionOf, ErrorOf};
pub use guard::PooledConnection;
pub(crate) use hook::AnyHook;
pub use hook::{HookError, OnConnect};
pub(crate) use streams::{Feed, StreamGuard, StreamKind, Streams};
pub use tracked::{Fault, Stamped, Tracked};

use crate::config::{ConnectorConfig, PoolConfig};
use crate::connector::Connector;
use crate::error::{ConfigErrors, Error, Origin, Result};
use crate::health::{self, Health, Input, Probe, Trial, Turn, Turns};
use crate::status::{BoxFuture, Event, Kind, PoolCounts, State, Status};
use leak::Leaks;
use tracked::Parts;

/// A typed, health-checked connection pool: the handle services keep.
///
/// Cloning is cheap (an `Arc`). Get one from the [`Manager`](crate::Manager)
/// (`manager.redis("cache")?`, `manager.pool::<M>("name")?`).
pub struct Pool<M: Bb8Manager> {
    inner: Arc<Inner<M>>,
}

pub(crate) struct Inner<M: Bb8Manager> {
    bb8: bb8::Pool<Tracked<M>>,
    parts: Arc<Parts<M>>,
    health: Arc<Health>,
    /// One turn per connection, handed out in arrival order.
    turns: Arc<Turns>,
    waiting: AtomicUsize,
    /// Connections the health checks opened and gave to the pool.
    added: std::sync::atomic::AtomicU64,
    /// Leases, watches and subscriptions open now.
    streams: Arc<Streams>,
    /// Checkouts held now, while leak detection is on.
    leaks: Option<Arc<Leaks>>,
    /// The pool that replaced this one on a reload: handles to this one follow it.
    successor: OnceLock<Pool<M>>,
}

impl<M: Bb8Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Bb8Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.health.name)
            .field("kind", &self.inner.health.kind)
            .field("endpoint", &self.inner.parts.backend.endpoint())
            .field("state", &self.inner.health.state())
            .finish()
    }
}

/// bb8's error sink: a fresh connection failing is news for the health engine; a pooled
/// one failing validation, or retired, is not.
struct Sink<M: Bb8Manager> {
    health: Arc<Health>,
    parts: Arc<Parts<M>>,
}

impl<M: Bb8Manager> std::fmt::Debug for Sink<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("connector", &self.health.name)
            .finish()
    }
}

impl<M: Bb8Manager> bb8::ErrorSink<Fault<M::Error>> for Sink<M> {
    fn sink(&self, fault: Fault<M::Error>) {
        let h = &self.health;
        match fault {
            Fault::Connect(e) => {
                let e = self.parts.backend.classify(&h.name, e);
                tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "connection failed");
                h.connect_failed(&e);
            }
            Fault::Invalid(e) => {
                tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "pooled connection failed validation; dropped");
            }
            Fault::Retired => {}
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<Fault<M::Error>>> {
        Box::new(Sink {
            health: self.health.clone(),
            parts: self.parts.clone(),
        })
    }
}

/// Counts a caller waiting in line for a turn while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the manager builds a pool.
pub(crate) struct Spec {
    pub name: String,
    pub connector: ConnectorConfig,
    pub pool: PoolConfig,
    pub events: broadcast::Sender<Event>,
    pub on_connect: Option<AnyHook>,
}

impl<M: Bb8Manager> Pool<M> {
    /// Builds the bb8 pool, makes the first connection (unless `lazy_connect`) and starts
    /// the health task.
    pub(crate) async fn build(
        spec: Spec,
        manager: M,
        backend: Box<dyn Backend<Manager = M>>,
    ) -> Result<Self> {
        let on_connect = match &spec.on_connect {
            Some(hook) => {
                let mut errors = ConfigErrors::default();
                let hook = hook.typed::<M::Connection>(&spec.name, &mut errors);
                errors.into_result()?;
                hook
            }
            None => None,
        };
        let kind = backend.kind();
        let leaks = spec
            .connector
            .leak_detection_threshold
            .map(|t| Leaks::start(&spec.name, kind.as_str(), t));
        let health = Arc::new(Health::new(
            spec.name,
            kind,
            spec.connector.clone(),
            spec.pool.max_size,
            spec.events,
        ));
        let losses = backend.loss_signal();
        let parts = Arc::new(Parts {
            manager,
            checks_locally: backend.checks_locally(),
            backend,
            life: health.life.clone(),
            health: health.clone(),
            on_connect,
            origin: health.origin(),
            connect_timeout: spec.connector.connect_timeout,
            #[cfg(feature = "metrics")]
            meters: crate::metrics::PoolMeters::new(&health.name, health.kind.as_str()),
        });
        let of = Arc::downgrade(&parts);
        health.endpoint_from(Box::new(move || {
            of.upgrade()
                .map(|p| p.backend.endpoint())
                .unwrap_or_default()
        }));
        let on_retire = Arc::downgrade(&parts);
        health.on_retire(Box::new(move || {
            if let Some(p) = on_retire.upgrade() {
                p.backend.retire(&p.manager);
            }
        }));
        let p = &spec.pool;
        let bb8 = bb8::Pool::builder()
            .max_size(p.max_size)
            .min_idle(p.min_idle)
            .idle_timeout(p.max_idle_time)
            .max_lifetime(p.max_lifetime)
            .connection_timeout(spec.connector.connect_timeout)
            // bb8's reaper also notices a dropped pool only when it runs: once a second
            // keeps idle timeouts precise and ends the task soon after the pool.
            .reaper_rate(Duration::from_secs(1))
            // The adapter validates: locally for connhub's own backends (epoch, broken
            // flag), with the manager's own `is_valid` for the others.
            .test_on_check_out(true)
            // Reconnecting is the health engine's job: no retry storm here.
            .retry_connection(false)
            .error_sink(Box::new(Sink {
                health: health.clone(),
                parts: parts.clone(),
            }))
            .build_unchecked(Tracked {
                parts: parts.clone(),
            });
        let pool = Pool {
            inner: Arc::new(Inner {
                bb8,
                parts,
                turns: health.turns.clone(),
                health,
                waiting: AtomicUsize::new(0),
                added: std::sync::atomic::AtomicU64::new(0),
                streams: Arc::default(),
                leaks,
                successor: OnceLock::new(),
            }),
        };
        if !spec.connector.lazy_connect {
            let h = &*pool.inner.health;
            if let Some(probe) = h.apply(Input::Tick, None).probe
                && let Err(e) = health::run_trial(h, &*pool.inner, probe).await
            {
                h.apply(Input::Close, Some(&e));
                pool.inner.turns.close();
                return Err(e);
            }
        }
        health::spawn(
            pool.inner.health.clone(),
            Arc::downgrade(&pool.inner),
            losses,
        );
        Ok(pool)
    }

    /// Checks out a connection.
    ///
    /// While the connector is healthy this is a bb8 checkout and nothing more (for
    /// connhub's own backends, no round trip to the server). Callers are served in the
    /// order they asked.
    ///
    /// Errors: [`Error::Unavailable`] at once while the connector is down (with
    /// `fail_fast`, the default), [`Error::Auth`] / [`Error::Tls`] when that is why it is
    /// down, [`Error::Timeout`] when no connection came within `connect_timeout` (saying
    /// whether the pool was exhausted), [`Error::Closed`] after close. Every refusal
    /// yields to the runtime when the task's budget is spent, so retrying in a loop is
    /// safe.
    ///
    /// The connection holds its own reference to the pool, so it can outlive this handle
    /// (`manager.redis("cache")?.get().await?` works) and move into spawned tasks.
    ///
    /// A connection whose [`OnConnect`] hook failed is not handed out: its caller gets
    /// [`Error::Hook`], and the next checkout another connection. With
    /// `leak_detection_threshold` set, the line that called `get()` is named when the
    /// connection is held past it. After a [`reload`](crate::Manager::reload) replaced the
    /// connector, this handle checks out from the new pool.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<PooledConnection<M>>> + '_ {
        self.current().get_at(Location::caller())
    }

    /// The checkout future callers keep in their own: the fast path (admitted, a turn
    /// free, a connection idle) awaits nothing; everything else is one boxed future,
    /// decided in a block that ends before the only await, so no connection is kept in
    /// this future and it stays a few words.
    #[inline]
    async fn get_at(&self, at: &'static Location<'static>) -> Result<PooledConnection<M>> {
        let rest: BoxFuture<'_, Result<PooledConnection<M>>> = 'decide: {
            let inner = &*self.inner;
            if self.admit().is_err() {
                break 'decide Box::pin(self.slow(at));
            }
            let Ok(Some(turn)) = Turns::try_take(&inner.turns) else {
                break 'decide Box::pin(self.waited(None, at));
            };
            let start = Since::now();
            if inner.parts.checks_locally
                && let Some(conn) = inner.idle_now()
            {
                return self.handed_out(conn, turn, start, at);
            }
            Box::pin(self.waited(Some(turn), at))
        };
        rest.await
    }

    /// Refused at once, or no turn free: the refusal (asking for a trial, yielding to
    /// the runtime), or a wait in line.
    async fn slow(&self, at: &'static Location<'static>) -> Result<PooledConnection<M>> {
        match self.admit_or_yield().await {
            Ok(()) => self.waited(None, at).await,
            Err(e) => Box::pin(self.replaced_or(e)?.slow(at)).await,
        }
    }

    /// The pool that replaced this one, when `e` says this one is closed because a
    /// reload replaced it (between the caller's look and its checkout); else `e`.
    fn replaced_or(&self, e: Error) -> Result<&Pool<M>> {
        match e {
            Error::Closed { .. } => self.newer().ok_or(e),
            e => Err(e),
        }
    }

    /// This pool, or the one that replaced it on a reload (the newest).
    pub(crate) fn current(&self) -> &Pool<M> {
        let mut pool = self;
        while let Some(next) = pool.inner.successor.get() {
            pool = next;
        }
        pool
    }

    /// The pool that replaced this one on a reload (the newest), if any.
    pub(crate) fn newer(&self) -> Option<&Pool<M>> {
        self.inner.successor.get().map(|_| self.current())
    }

    /// Makes `next` the pool this one's handles use from now on (a reload replaced it).
    pub(crate) fn replaced_by(&self, next: &Pool<M>) {
        self.inner.health.mark_replaced();
        let _ = self.inner.successor.set(next.clone());
    }

    /// The waiting path, and on to the pool that replaced this one if a reload closed it
    /// meanwhile.
    async fn waited(
        &self,
        turn: Option<Turn>,
        at: &'static Location<'static>,
    ) -> Result<PooledConnection<M>> {
        match self.checkout(turn, Instant::now(), at).await {
            Err(e) => Box::pin(self.replaced_or(e)?.slow(at)).await,
            done => done,
        }
    }

    /// A checkout done: the guard, its leak ticket, and (with metrics) how long it took;
    /// or, for a connection whose `on_connect` hook failed, the hook's error (the
    /// connection is dropped).
    #[inline]
    fn handed_out(
        &self,
        mut conn: bb8::PooledConnection<'static, Tracked<M>>,
        turn: Turn,
        start: Since,
        at: &'static Location<'static>,
    ) -> Result<PooledConnection<M>> {
        if let Some(e) = conn.take_hook_failure() {
            return Err(e);
        }
        let leak = self.inner.leaks.as_ref().map(|l| l.checkout(at));
        #[cfg(feature = "metrics")]
        {
            let meters = &self.inner.parts.meters;
            meters.waited(start.elapsed());
            Ok(PooledConnection::new(
                conn,
                turn,
                leak,
                meters.use_time().clone(),
            ))
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = start;
            Ok(PooledConnection::new(conn, turn, leak))
        }
    }

    /// A refused caller: asks for a trial if one is due, and yields to the runtime when
    /// its budget is spent; then returns why it was refused.
    async fn refused(&self) -> Error {
        self.inner.health.demand();
        tokio::task::consume_budget().await;
        self.inner.health.unavailable()
    }

    /// The waiting path: a turn (in arrival order), then a connection, within
    /// `connect_timeout` of `start`, refused as soon as the connector goes down.
    async fn checkout(
        &self,
        turn: Option<Turn>,
        start: Instant,
        at: &'static Location<'static>,
    ) -> Result<PooledConnection<M>> {
        let inner = &*self.inner;
        let h = &*inner.health;
        let limit = h.config.connect_timeout;
        // Listen first, then look at the state, so no change can slip between.
        let down = h.went_down();
        self.admit()?;
        let in_line = std::sync::atomic::AtomicBool::new(turn.is_none());
        let wait = async {
            let turn = match turn {
                Some(t) => t,
                None => {
                    let _counted = Waiting::count(&inner.waiting);
                    let turn = Turns::take(&inner.turns).await;
                    turn.map_err(|_closed| h.closed())?
                }
            };
            in_line.store(false, Ordering::Relaxed);
            // bb8 validates every connection it hands out through the adapter (epoch,
            // broken flag), so one made before an outage never comes out of here.
            let conn = inner.bb8.get_owned().await.map_err(|e| self.run_error(e))?;
            self.handed_out(conn, turn, Since::of(start), at)
        };
        // One deadline for the turn and the connection together.
        tokio::select! {
            biased;
            r = tokio::time::timeout_at(start + limit, wait) => r.unwrap_or_else(|_elapsed| {
                #[cfg(feature = "metrics")]
                inner.parts.meters.timed_out();
                Err(if in_line.load(Ordering::Relaxed) {
                    self.exhausted(limit, inner.waiting.load(Ordering::Relaxed))
                } else {
                    self.run_error(bb8::RunError::TimedOut)
                })
            }),
            () = down, if h.config.fail_fast => Err(self.refused().await),
        }
    }

    fn exhausted(&self, after: Duration, waiting: usize) -> Error {
        let h = &*self.inner.health;
        let s = self.inner.bb8.state();
        Error::Timeout {
            origin: Origin::new(h.name.clone(), h.kind.clone()),
            what: "checkout",
            after,
            detail: Some(format!(
                "pool exhausted: all {} connections in use, {waiting} more callers waiting",
                s.connections
            )),
            last_error: h.last_error().map(Box::new),
        }
    }

    /// Refuses a checkout when the pool is closed, or down with `fail_fast`.
    pub(crate) fn admit(&self) -> Result<()> {
        let h = &*self.inner.health;
        match h.state() {
            State::Closed => Err(h.closed()),
            State::Reconnecting | State::Failed if h.config.fail_fast => Err(h.unavailable()),
            _ => Ok(()),
        }
    }

    /// [`admit`](Pool::admit), but a refusal asks for a trial if one is due and yields
    /// to the runtime when the task's budget is spent: a caller retrying in a loop never
    /// starves the runtime. Holds nothing across the await, so the futures stay small.
    pub(crate) async fn admit_or_yield(&self) -> Result<()> {
        if self.admit().is_ok() {
            return Ok(());
        }
        self.inner.health.demand();
        tokio::task::consume_budget().await;
        self.admit()
    }

    /// The backend's bb8 manager.
    pub(crate) fn manager(&self) -> &M {
        &self.inner.parts.manager
    }

    /// Records a failed connection attempt made outside bb8 (a shared handle) and tells
    /// the health engine, as bb8's error sink does for the pool's own; returns the error.
    pub(crate) fn connect_failed(&self, e: Error) -> Error {
        self.inner.health.connect_failed(&e);
        e
    }

    fn run_error(&self, e: bb8::RunError<Fault<M::Error>>) -> Error {
        let h = &*self.inner.health;
        match e {
            bb8::RunError::TimedOut => {
                if h.state() == State::Closed {
                    h.closed()
                } else {
                    h.timeout("checkout", h.config.connect_timeout)
                }
            }
            bb8::RunError::User(Fault::Connect(e) | Fault::Invalid(e)) => {
                self.inner.parts.backend.classify(&h.name, e)
            }
            bb8::RunError::User(Fault::Retired) => h.unavailable(),
        }
    }

    /// Closes the pool: the health task stops, new checkouts are refused with
    /// [`Error::Closed`], and this waits up to `drain_timeout` for checked-out connections
    /// to come back. Idle connections are dropped. Calling it again does nothing.
    pub async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        let h = &*inner.health;
        if h.state() == State::Closed {
            return Ok(());
        }
        h.apply(Input::Close, None);
        inner.turns.close();
        let deadline = Instant::now() + h.config.drain_timeout;
        loop {
            let s = inner.bb8.state();
            if s.connections <= s.idle_connections {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    connector = %h.name,
                    in_use = s.connections - s.idle_connections,
                    "drain timeout reached with connections still checked out"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        inner.drop_idle();
        Ok(())
    }

    /// The underlying bb8 pool, for what connhub does not wrap. Checkouts made here bypass
    /// admission, fail-fast, the closed check, `on_connect` hooks and leak detection.
    pub fn bb8(&self) -> &bb8::Pool<Tracked<M>> {
        &self.inner.bb8
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.inner.health.name
    }

    /// The connector's state (of the pool that replaced this one, after a reload).
    pub fn state(&self) -> State {
        self.current().inner.health.state()
    }

    /// A snapshot of the connector (state, pool counters, last check), free of secrets.
    pub fn status(&self) -> Status {
        self.current().inner.status()
    }

    /// True while the connector is `Healthy`.
    pub fn is_connected(&self) -> bool {
        self.state() == State::Healthy
    }

    /// Counts a long-lived stream of `kind` in status until the guard is dropped.
    pub(crate) fn open_stream(&self, kind: StreamKind) -> StreamGuard {
        self.inner.streams.open(kind)
    }

    /// Completes when this pool is closed, with the pool that replaced it on a reload if
    /// one did: a long-lived stream moves on to that one, and ends otherwise.
    pub(crate) async fn closed_or_replaced(&self) -> Option<Pool<M>> {
        self.closed().await;
        self.newer().cloned()
    }

    /// Moves a stream whose pool was closed on to `next`, the pool that replaced it,
    /// counting it there; false when there is none (the connector was closed or removed:
    /// the stream ends).
    pub(crate) fn move_stream(&mut self, next: Option<Pool<M>>, counted: &mut StreamGuard) -> bool {
        let Some(next) = next else { return false };
        *self = next;
        *counted = self.open_stream(counted.kind());
        self.record_status();
        tracing::debug!(connector = %self.name(), kind = %self.inner.health.kind, "stream moved to the reloaded connector");
        true
    }

    /// Completes when the connector is closed: long-lived streams end then.
    pub(crate) async fn closed(&self) {
        let h = &*self.inner.health;
        loop {
            let next = h.went_down();
            if h.life.is_closed() {
                return;
            }
            next.await;
        }
    }

    /// The connector's settings.
    pub(crate) fn connector_config(&self) -> &ConnectorConfig {
        &self.inner.health.config
    }

    /// Records the status in metrics now (a stream opened or closed).
    pub(crate) fn record_status(&self) {
        #[cfg(feature = "metrics")]
        crate::metrics::record(&self.status());
    }
}

/// When a checkout started, kept only when metrics record how long it took: the fast path
/// reads no clock otherwise.
#[derive(Clone, Copy)]
struct Since(#[cfg(feature = "metrics")] Instant);

impl Since {
    fn now() -> Self {
        Since(
            #[cfg(feature = "metrics")]
            Instant::now(),
        )
    }

    fn of(start: Instant) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = start;
        Since(
            #[cfg(feature = "metrics")]
            start,
        )
    }

    #[cfg(feature = "metrics")]
    fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}

impl<M: Bb8Manager> Inner<M> {
    /// A usable idle connection, taken without waiting (one poll of bb8's checkout);
    /// `None` when none is idle. Only for backends that check connections locally, whose
    /// validation never waits: a pending poll is dropped here, and dropping a round trip
    /// half way could leave a connection in a state nobody expects.
    fn idle_now(&self) -> Option<bb8::PooledConnection<'static, Tracked<M>>> {
        let mut cx = Context::from_waker(Waker::noop());
        let fut = std::pin::pin!(self.bb8.get_owned());
        match fut.poll(&mut cx) {
            Poll::Ready(Ok(conn)) => Some(conn),
            Poll::Ready(Err(_)) | Poll::Pending => None,
        }
    }

    /// Drops every idle connection (they all fail validation once the pool is closed).
    fn drop_idle(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let fut = std::pin::pin!(self.bb8.get());
        let _ = fut.poll(&mut cx);
    }

    fn status(&self) -> Status {
        let h = &*self.health;
        let s = self.bb8.state();
        let st = &s.statistics;
        let (latency, at) = h.last_check();
        Status {
            name: h.name.clone(),
            kind: h.kind.clone(),
            state: h.state(),
            required: h.config.required,
            endpoint: self.parts.backend.endpoint(),
            pool: PoolCounts {
                max_size: self.bb8.config().max_size,
                limit: h.limit(),
                min_idle: self.bb8.config().min_idle.unwrap_or(0),
                pending: u32::try_from(self.waiting.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
                connections: s.connections,
                idle: s.idle_connections,
                in_use: s.connections.saturating_sub(s.idle_connections),
                gets: st.get_direct + st.get_waited,
                gets_waited: st.get_waited,
                gets_timed_out: st.get_timed_out,
                wait_time: st.get_wait_time,
                connections_created: st.connections_created
                    + self.added.load(std::sync::atomic::Ordering::Relaxed),
                // Every connection that failed validation is counted here too: the
                // adapter retires it, so bb8 counts it as broken when it drops it.
                connections_closed_broken: st.connections_closed_broken,
                connections_closed_idle: st.connections_closed_idle_timeout,
                connections_closed_lifetime: st.connections_closed_max_lifetime,
                leaks: self.leaks.as_ref().map_or(0, |l| l.reported()),
            },
            streams: self.streams.counts(),
            last_check_latency: latency,
            last_check_at: at,
            last_error: h.last_error().map(|e| e.to_string()),
            last_connect_error: h.last_connect_error().map(|e| e.to_string()),
            reconnect_attempts: h.reconnect_attempts(),
        }
    }

    /// One trial of the backend, bounded by `connect_timeout`: a probe on an idle pooled
    /// connection when the connector is up, one is idle and the backend checks locally;
    /// if that fails (a connection the server closed, say), the connection is dropped and
    /// a fresh one is tried. Only a fresh connection failing fails the trial. A fresh
    /// connection that works joins the pool.
    async fn probe(&self) -> Result<Duration> {
        let h = &*self.health;
        let parts = &*self.parts;
        let limit = h.config.connect_timeout;
        let start = Instant::now();
        let check = async {
            // An idle connection is probed only where taking it costs no round trip: a
            // plain bb8 manager validates at checkout, and a validation cut short at the
            // first poll could leave its connection in a state nobody expects.
            if h.state() == State::Healthy
                && parts.checks_locally
                && let Some(mut conn) = self.idle_now()
            {
                match parts.backend.probe(&parts.manager, &mut conn).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        conn.retire();
                        tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "idle connection failed its check; trying a fresh one");
                    }
                }
            }
            let mut conn = match self.bb8.dedicated_connection().await {
                Ok(c) => c,
                Err(Fault::Connect(e) | Fault::Invalid(e)) => {
                    return Err(parts.backend.classify(&h.name, e));
                }
                Err(Fault::Retired) => return Err(h.closed()),
            };
            parts
                .backend
                .probe(&parts.manager, &mut conn)
                .await
                .map_err(|e| parts.backend.classify(&h.name, e))?;
            // The proven connection serves the next checkout; a full pool just drops it.
            if self.bb8.add(conn).is_ok() {
                // bb8 counts only the connections it opens itself.
                self.added
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        };
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(h.timeout("health check", limit)),
        }
    }
}

impl<M: Bb8Manager> Inner<M> {
    /// The check while the pool is limited: a round trip on one of the pool's own
    /// connections, waiting for one if all are in use (a fresh one would be refused).
    /// Bounded by `connect_timeout`; fails when none answers in time, or as soon as the
    /// pool has no connection left (each one that fails its validation is dropped).
    async fn probe_pooled(&self) -> Result<Duration> {
        let h = &*self.health;
        let parts = &*self.parts;
        let limit = h.config.connect_timeout;
        let start = Instant::now();
        let none_left = async {
            while h.life.live() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let check = async {
            let got = tokio::select! {
                got = self.bb8.get() => got,
                () = none_left => {
                    return Err(h.last_connect_error().unwrap_or_else(|| {
                        h.timeout("health check", limit)
                    }));
                }
            };
            let mut conn = got.map_err(|e| match e {
                bb8::RunError::User(Fault::Connect(e) | Fault::Invalid(e)) => {
                    parts.backend.classify(&h.name, e)
                }
                bb8::RunError::User(Fault::Retired) => h.closed(),
                bb8::RunError::TimedOut => h.timeout("health check", limit),
            })?;
            parts
                .backend
                .probe(&parts.manager, &mut conn)
                .await
                .map_err(|e| {
                    conn.retire();
                    parts.backend.classify(&h.name, e)
                })
        };
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(h.timeout("health check", limit)),
        }
    }

    /// One more connection for a limited pool: opened fresh and pooled if the server
    /// takes it. Bounded by `connect_timeout`.
    async fn grow(&self) -> Result<Duration> {
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        let start = Instant::now();
        let conn = match tokio::time::timeout(limit, self.bb8.dedicated_connection()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(Fault::Connect(e) | Fault::Invalid(e))) => {
                return Err(self.parts.backend.classify(&h.name, e));
            }
            Ok(Err(Fault::Retired)) => return Err(h.closed()),
            Err(_) => return Err(h.timeout("connect", limit)),
        };
        if self.bb8.add(conn).is_ok() {
            self.added.fetch_add(1, Ordering::Relaxed);
        }
        Ok(start.elapsed())
    }
}

impl<M: Bb8Manager> Trial for Inner<M> {
    fn trial(&self, probe: Probe) -> BoxFuture<'_, Result<Duration>> {
        match probe {
            Probe::Check => Box::pin(self.probe()),
            Probe::Pooled => Box::pin(self.probe_pooled()),
            Probe::Grow => Box::pin(self.grow()),
        }
    }

    fn after_trial(&self) {
        #[cfg(feature = "metrics")]
        if !self.health.is_replaced() {
            crate::metrics::record(&self.status());
        }
    }
}

impl<M: Bb8Manager> Connector for Pool<M> {
    fn name(&self) -> &str {
        &self.inner.health.name
    }

    fn kind(&self) -> &Kind {
        &self.inner.health.kind
    }

    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.check_now().await.map(|_| ()) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.close())
    }

    fn health_check(&self) -> BoxFuture<'_, Result<Duration>> {
        Box::pin(self.check_now())
    }

    fn state(&self) -> State {
        self.inner.health.state()
    }

    fn config(&self) -> &ConnectorConfig {
        &self.inner.health.config
    }

    fn status(&self) -> Status {
        Pool::status(self)
    }

    fn request_check(&self) {
        self.current().inner.health.demand();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<M: Bb8Manager> Pool<M> {
    /// A check now, outside the engine's schedule, with all its consequences (a failure
    /// of a fresh connection moves the connector down; success brings it up).
    async fn check_now(&self) -> Result<Duration> {
        let h = &*self.inner.health;
        if h.state() == State::Closed {
            return Err(h.closed());
        }
        health::run_trial(h, &*self.inner, h.check_probe()).await
    }
}
