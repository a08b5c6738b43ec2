//! [`Pool<M>`]: a `bb8::Pool<M>` with its connector's health.
//!
//! A checkout is a plain bb8 checkout while the connector is healthy. While the connector
//! is known to be down it is refused at once ([`Error::Unavailable`]); a checkout already
//! waiting when the connector goes down is woken and refused too. A checkout that times
//! out says so with the last real error ([`Error::Timeout`]).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use tokio::sync::broadcast;

use crate::config::ConnectorConfig;
use crate::connector::{BoxFuture, Connector, Event, Kind, PoolCounts, State, Status};
use crate::error::{Error, Result};
use crate::health::{Health, Liveness};
use crate::health_task;
use crate::pool_config::PoolConfig;

/// A checked-out connection; derefs to the backend's connection and goes back to the pool
/// when dropped.
pub type PooledConnection<'a, M> = bb8::PooledConnection<'a, M>;

/// Any `bb8` manager whose error is a standard error, which is every published one.
pub trait Backend: bb8::ManageConnection<Error: std::error::Error + Send + Sync + 'static> {}

impl<M> Backend for M
where
    M: bb8::ManageConnection,
    M::Error: std::error::Error + Send + Sync + 'static,
{
}

/// Sends one request on a connection to prove the backend answers.
pub(crate) type PingFn<M> =
    for<'a> fn(
        &'a mut <M as bb8::ManageConnection>::Connection,
    ) -> BoxFuture<'a, std::result::Result<(), <M as bb8::ManageConnection>::Error>>;

/// Backend-specific state a pool carries (the Redis multiplexed connections), told when
/// the pool closes.
pub(crate) trait PoolExt: Send + Sync + 'static {
    fn on_close(&self);
    fn as_any(&self) -> &dyn Any;
}

/// Whether a connection may be handed out, decided locally.
pub(crate) type UsableFn<M> = fn(&<M as bb8::ManageConnection>::Connection) -> bool;

/// How a pool is put together; built by the backends and by `Manager::add_pool`.
pub(crate) struct Spec<M: bb8::ManageConnection> {
    pub name: String,
    pub kind: Kind,
    pub endpoint: String,
    pub connector: ConnectorConfig,
    pub pool: PoolConfig,
    /// Shared with the manager's connections, when the backend is one of connhub's own.
    pub liveness: Option<Arc<Liveness>>,
    /// A real round trip for health checks; without it, a validated checkout is the check.
    pub ping: Option<PingFn<M>>,
    /// A local check that a connection may still be handed out (connhub's own backends:
    /// broken flag and epoch). With it, bb8 does not validate at checkout; the pool checks
    /// this instead, which costs no await.
    pub usable: Option<UsableFn<M>>,
    pub events: broadcast::Sender<Event>,
    pub ext: Option<Box<dyn PoolExt>>,
}

/// A typed, health-checked connection pool: the handle services keep.
///
/// Cloning is cheap (an `Arc`). Get one from the [`Manager`](crate::Manager)
/// (`manager.redis("cache")?`, `manager.pool::<M>("name")?`).
pub struct Pool<M: bb8::ManageConnection> {
    inner: Arc<Inner<M>>,
}

pub(crate) struct Inner<M: bb8::ManageConnection> {
    bb8: bb8::Pool<M>,
    pub(crate) health: Arc<Health>,
    endpoint: String,
    ping: Option<PingFn<M>>,
    usable: Option<UsableFn<M>>,
    /// Connections the health checks opened and gave to the pool.
    added: std::sync::atomic::AtomicU64,
    /// Connections know the liveness epoch, so a closed pool can drop its idle ones.
    own_backend: bool,
    ext: Option<Box<dyn PoolExt>>,
}

impl<M: bb8::ManageConnection> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<M: bb8::ManageConnection> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.health.name)
            .field("kind", &self.inner.health.kind)
            .field("endpoint", &self.inner.endpoint)
            .field("state", &self.inner.health.state())
            .finish()
    }
}

#[derive(Debug)]
struct Sink(Arc<Health>);

impl<E: std::error::Error + Send + Sync + 'static> bb8::ErrorSink<E> for Sink {
    fn sink(&self, error: E) {
        let h = &self.0;
        let error = Error::from_backend(&h.name, &h.kind, error);
        if is_retired(&error) {
            return;
        }
        tracing::debug!(connector = %h.name, kind = %h.kind, %error, "connection failed");
        h.record_error(&error);
        h.mark_down(&error);
        h.liveness.report_trouble();
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(Sink(self.0.clone()))
    }
}

fn is_retired(e: &Error) -> bool {
    match e {
        Error::Backend { source, .. } => source.is::<crate::health::Retired>(),
        _ => false,
    }
}

impl<M: Backend> Pool<M> {
    /// Builds the bb8 pool, makes the first connection (unless `lazy_connect`) and starts
    /// the health task.
    pub(crate) async fn build(spec: Spec<M>, manager: M) -> Result<Self> {
        let own_backend = spec.liveness.is_some();
        let liveness = spec.liveness.unwrap_or_default();
        let health = Arc::new(Health::new(
            spec.name,
            spec.kind,
            spec.connector.clone(),
            liveness,
            spec.events,
        ));
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
            // connhub's own backends are checked locally after checkout (`usable`: epoch
            // and broken flag, no round trip); other backends keep their own `is_valid`.
            .test_on_check_out(spec.usable.is_none())
            // Reconnecting is the health task's job, with backoff: no retry storm here.
            .retry_connection(false)
            .error_sink(Box::new(Sink(health.clone())))
            .build_unchecked(manager);
        let pool = Pool {
            inner: Arc::new(Inner {
                bb8,
                health,
                endpoint: spec.endpoint,
                ping: spec.ping,
                usable: spec.usable,
                added: std::sync::atomic::AtomicU64::new(0),
                own_backend,
                ext: spec.ext,
            }),
        };
        if !spec.connector.lazy_connect
            && let Err(e) = pool.inner.check().await
        {
            pool.inner.health.set_state(State::Closed, Some(&e));
            return Err(e);
        }
        health_task::spawn(pool.inner.health.clone(), Arc::downgrade(&pool.inner));
        Ok(pool)
    }

    /// Checks out a connection.
    ///
    /// While the connector is healthy this is a bb8 checkout and nothing more: no round
    /// trip to the server. Errors: [`Error::Unavailable`] at once while the connector is
    /// down (with `fail_fast`, the default), [`Error::Auth`] / [`Error::Tls`] when that is
    /// why it is down, [`Error::Timeout`] (with the last real error) when no connection
    /// came within `connect_timeout`, [`Error::Closed`] after close.
    ///
    /// The connection holds its own reference to the pool, so it can outlive this handle
    /// (`manager.redis("cache")?.get().await?` works) and move into spawned tasks.
    ///
    /// An idle connection is taken at the first poll without building anything else; only
    /// a checkout that has to wait builds (and boxes) the future that waits, listening for
    /// the connector going down as well.
    pub async fn get(&self) -> Result<PooledConnection<'static, M>> {
        self.admit()?;
        if let Some(conn) = self.inner.idle_now() {
            return Ok(conn);
        }
        Box::pin(self.get_waiting()).await
    }

    async fn get_waiting(&self) -> Result<PooledConnection<'static, M>> {
        let h = &*self.inner.health;
        loop {
            // Listen first, then look at the state, so no change can slip between.
            let down = h.went_down();
            self.admit()?;
            let conn = tokio::select! {
                biased;
                r = self.inner.bb8.get_owned() => r.map_err(|e| self.run_error(e))?,
                () = down, if h.config.fail_fast => return Err(h.unavailable()),
            };
            if self.is_usable(&conn) {
                return Ok(conn);
            }
        }
    }

    fn is_usable(&self, conn: &M::Connection) -> bool {
        self.inner.is_usable(conn)
    }

    /// Refuses a checkout at once when the pool is closed, or down with `fail_fast`.
    pub(crate) fn admit(&self) -> Result<()> {
        let h = &*self.inner.health;
        match h.state() {
            State::Closed => Err(h.closed()),
            State::Reconnecting | State::Failed if h.config.fail_fast => Err(h.unavailable()),
            _ => Ok(()),
        }
    }

    /// The backend-specific state this pool was built with.
    pub(crate) fn ext<T: 'static>(&self) -> Option<&T> {
        self.inner.ext.as_ref()?.as_any().downcast_ref::<T>()
    }

    /// A connection made outside the pool's accounting; a failure marks the connector
    /// down like any other failed connection.
    pub(crate) async fn dedicated(&self) -> Result<M::Connection> {
        let h = &*self.inner.health;
        self.inner
            .bb8
            .dedicated_connection()
            .await
            .map_err(|e| self.connect_failed(Error::from_backend(&h.name, &h.kind, e)))
    }

    /// Records a failed connection attempt made outside bb8 and marks the connector down,
    /// as bb8's error sink does for the pool's own; returns the error.
    pub(crate) fn connect_failed(&self, e: Error) -> Error {
        let h = &*self.inner.health;
        h.record_error(&e);
        h.mark_down(&e);
        h.liveness.report_trouble();
        e
    }

    fn run_error(&self, e: bb8::RunError<M::Error>) -> Error {
        let h = &*self.inner.health;
        match e {
            bb8::RunError::TimedOut => {
                if h.state() == State::Closed {
                    h.closed()
                } else {
                    h.timeout("checkout", h.config.connect_timeout)
                }
            }
            bb8::RunError::User(e) => Error::from_backend(&h.name, &h.kind, e),
        }
    }

    /// Closes the pool: the health task stops, new checkouts are refused with
    /// [`Error::Closed`], and this waits up to `drain_timeout` for checked-out connections
    /// to come back. Idle connections are dropped. Calling it again does nothing.
    pub async fn close(&self) -> Result<()> {
        let inner = &*self.inner;
        let h = &*inner.health;
        if !h.set_state(State::Closed, None) {
            return Ok(());
        }
        h.stop.notify_waiters();
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
        if let Some(ext) = &inner.ext {
            ext.on_close();
        }
        if inner.own_backend {
            // Every idle connection now fails local validation, so one non-waiting
            // checkout walks the idle list and drops them all.
            let _ = inner.bb8.get().now_or_never();
        }
        Ok(())
    }

    /// The underlying bb8 pool, for what connhub does not wrap. Checkouts made here bypass
    /// fail-fast and the closed check.
    pub fn bb8(&self) -> &bb8::Pool<M> {
        &self.inner.bb8
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.inner.health.name
    }

    /// The connector's state.
    pub fn state(&self) -> State {
        self.inner.health.state()
    }

    /// A snapshot of the connector (state, pool counters, last check), free of secrets.
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// True while the connector is `Healthy`.
    pub fn is_connected(&self) -> bool {
        self.inner.health.state() == State::Healthy
    }
}

impl<M: Backend> Inner<M> {
    fn is_usable(&self, conn: &M::Connection) -> bool {
        self.usable.is_none_or(|usable| usable(conn))
    }

    /// A usable idle connection, taken without waiting (one poll of bb8's checkout);
    /// `None` when none is idle. (bb8's checkout fails only when its timeout ends, which
    /// cannot happen at the first poll; the waiting path would report it.)
    fn idle_now(&self) -> Option<PooledConnection<'static, M>> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            let fut = std::pin::pin!(self.bb8.get_owned());
            match fut.poll(&mut cx) {
                Poll::Ready(Ok(conn)) if self.is_usable(&conn) => return Some(conn),
                // Retired (broken, or older than the last outage): handing it back makes
                // bb8 discard it (`has_broken`). Try the next one.
                Poll::Ready(Ok(conn)) => drop(conn),
                Poll::Ready(Err(_)) | Poll::Pending => return None,
            }
        }
    }

    fn status(&self) -> Status {
        let inner = self;
        let h = &*inner.health;
        let s = inner.bb8.state();
        let st = &s.statistics;
        let (latency, at) = h.last_check();
        Status {
            name: h.name.clone(),
            kind: h.kind.clone(),
            state: h.state(),
            endpoint: inner.endpoint.clone(),
            pool: PoolCounts {
                max_size: inner.bb8.config().max_size,
                connections: s.connections,
                idle: s.idle_connections,
                in_use: s.connections.saturating_sub(s.idle_connections),
                gets: st.get_direct + st.get_waited,
                gets_waited: st.get_waited,
                gets_timed_out: st.get_timed_out,
                wait_time: st.get_wait_time,
                connections_created: st.connections_created
                    + inner.added.load(std::sync::atomic::Ordering::Relaxed),
                connections_closed_broken: st.connections_closed_broken
                    + st.connections_closed_invalid,
                connections_closed_idle: st.connections_closed_idle_timeout,
                connections_closed_lifetime: st.connections_closed_max_lifetime,
            },
            last_check_latency: latency,
            last_check_at: at,
            last_error: h.last_error().map(|e| e.to_string()),
            reconnect_attempts: h.reconnect_attempts(),
        }
    }

    /// One real check of the backend, bounded by `connect_timeout`: a ping on an idle
    /// pooled connection when there is one, else on a new connection that then joins the
    /// pool.
    async fn probe(&self) -> Result<Duration> {
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        let start = Instant::now();
        let check = async {
            // A usable idle connection when there is one (never one from before an
            // outage), else a new one.
            let idle = match h.state() {
                State::Healthy => self.idle_now(),
                _ => None,
            };
            if let Some(mut conn) = idle {
                if let Some(ping) = self.ping {
                    ping(&mut conn)
                        .await
                        .map_err(|e| Error::from_backend(&h.name, &h.kind, e))?;
                }
                return Ok(());
            }
            let mut conn = self
                .bb8
                .dedicated_connection()
                .await
                .map_err(|e| Error::from_backend(&h.name, &h.kind, e))?;
            if let Some(ping) = self.ping {
                ping(&mut conn)
                    .await
                    .map_err(|e| Error::from_backend(&h.name, &h.kind, e))?;
            }
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

    /// A probe, recorded; success makes the connector `Healthy`, failure leaves the state
    /// to the caller.
    pub(crate) async fn check(&self) -> Result<Duration> {
        let h = &*self.health;
        let start = Instant::now();
        let r = self.probe().await;
        match &r {
            Ok(latency) => {
                h.record_check(*latency, None);
                h.set_state(State::Healthy, None);
            }
            Err(e) => {
                tracing::warn!(connector = %h.name, kind = %h.kind, error = %e, "health check failed");
                h.record_check(start.elapsed(), Some(e));
            }
        }
        #[cfg(feature = "metrics")]
        crate::metrics::record(&self.status());
        r
    }

    /// A check with all its consequences: a failure marks the connector down.
    pub(crate) async fn check_now(&self) -> Result<Duration> {
        let r = self.check().await;
        if let Err(e) = &r {
            self.health.mark_down(e);
        }
        r
    }
}

impl<M: Backend> Connector for Pool<M> {
    fn name(&self) -> &str {
        &self.inner.health.name
    }

    fn kind(&self) -> &Kind {
        &self.inner.health.kind
    }

    fn connect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.state() == State::Closed {
                return Err(self.inner.health.closed());
            }
            self.inner.check_now().await.map(|_| ())
        })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.close())
    }

    fn health_check(&self) -> BoxFuture<'_, Result<Duration>> {
        Box::pin(async move {
            if self.state() == State::Closed {
                return Err(self.inner.health.closed());
            }
            self.inner.check_now().await
        })
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

    fn as_any(&self) -> &dyn Any {
        self
    }
}
