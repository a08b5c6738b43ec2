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
//!   is dropped and another taken. A check moves the connector down when a fresh
//!   connection fails, or when a connection the server took does not answer it.
//! - **Nor is a capacity limit**: a fresh connection refused while the pool's own
//!   connections work (a server at `maxclients`, a proxy's cap) limits the pool to those;
//!   callers wait their turn on them, and the health engine grows the pool back one
//!   connection at a time as the server accepts more.
//!
//! One idea a file: building the pool and its handle here; `checkout` (admission, the
//! fast path, the wait in line, refusals), `sink` (bb8's error sink), `probe` (the health
//! engine's trials), `dedicated` (a connection opened for one caller, outside the pool's
//! count), `status`, `close` (close and drain), `succession` (reload), and `connector`
//! (the object-safe view the manager keeps).

mod backend;
mod checkout;
mod close;
mod connector;
mod dedicated;
mod guard;
mod hook;
mod leak;
mod probe;
pub(crate) mod shared;
mod sink;
mod status;
pub(crate) mod streams;
mod succession;
mod tracked;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

pub(crate) use backend::Plain;
pub use backend::{Backend, Bb8Manager, ConnectionOf, ErrorOf};
pub(crate) use dedicated::Dedicated;
pub use guard::PooledConnection;
pub(crate) use hook::AnyHook;
pub use hook::{HookError, OnConnect};
pub(crate) use streams::{Feed, StreamGuard, StreamKind, Streams};
pub(crate) use succession::WeakPool;
pub(crate) use tracked::{Fault, Tracked};

use crate::config::{ConnectorConfig, PoolConfig};
use crate::error::{ConfigErrors, Error, Result};
use crate::health::{self, Health, Input, Turns};
use crate::status::{Event, State, Status};
use leak::Leaks;
use sink::Sink;
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
    /// Connections the health checks opened and gave to the pool.
    added: std::sync::atomic::AtomicU64,
    /// Leases, watches and subscriptions open now.
    streams: Arc<Streams>,
    /// Checkouts held now, while leak detection is on.
    leaks: Option<Arc<Leaks>>,
    /// The pool that replaced this one on a reload: handles to this one follow it.
    successor: OnceLock<Pool<M>>,
}

impl<M: Bb8Manager> Inner<M> {
    /// One turn per connection, handed out in arrival order; kept in the pool's
    /// [`Life`](crate::health::Life), where its connections give them back.
    #[inline]
    fn turns(&self) -> &Turns {
        &self.health.life.turns
    }
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

/// The engine's view of the pool it serves.
struct PartsOf<M: Bb8Manager>(Weak<Parts<M>>);

impl<M: Bb8Manager> health::Served for PartsOf<M> {
    fn endpoint(&self) -> String {
        self.0
            .upgrade()
            .map(|p| p.backend.endpoint())
            .unwrap_or_default()
    }

    fn retire(&self) {
        if let Some(p) = self.0.upgrade() {
            p.backend.retire(&p.manager);
        }
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
        let losses = backend.loss_signal();
        // The parts hold the engine, and the engine sees the parts weakly: no cycle, and
        // the engine has all it needs from the moment it is made.
        let parts = Arc::new_cyclic(|parts| {
            let health = Arc::new(Health::new(
                spec.name,
                kind,
                spec.connector.clone(),
                spec.pool.max_size,
                spec.events,
                Box::new(PartsOf(parts.clone())),
            ));
            Parts {
                manager,
                checks_locally: backend.checks_locally(),
                backend,
                life: health.life.clone(),
                on_connect,
                origin: health.origin(),
                connect_timeout: spec.connector.connect_timeout,
                #[cfg(feature = "metrics")]
                meters: crate::metrics::PoolMeters::new(&health.name, health.kind.as_str()),
                health,
            }
        });
        let health = parts.health.clone();
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
                health,
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
                pool.inner.turns().close();
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
