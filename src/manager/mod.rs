//! [`Manager`]: the registry of connectors, by name.

mod register;
mod reload;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::broadcast;

use crate::backend::etcd::EtcdPool;
use crate::backend::redis::RedisPool;
use crate::config::ManagerConfig;
use crate::connector::Connector;
use crate::error::{Error, Result};
use crate::pool::{AnyHook, Bb8Manager, Pool};
use crate::status::{Event, Kind, Status};
use crate::sync::{lock, read, write};
use reload::Declared;
pub use reload::ReloadReport;

/// How many state changes a slow subscriber may fall behind before it misses some.
const EVENT_CAPACITY: usize = 1024;

/// One place for every connection of a service: register connectors, look them up by name
/// as typed pools, check them, watch their state, close them.
///
/// `Manager` is cheap to clone and safe to share between tasks; lookups take a read lock
/// for a hash-map lookup and an `Arc` clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = connhub::ManagerConfig::from_file("connhub.yaml")?;
/// let manager = connhub::Manager::from_config(config).await?;
/// let cache = manager.redis("cache")?;
/// let mut conn = cache.get().await?;
/// let pong: String = connhub::redis::cmd("PING").query_async(&mut *conn).await?;
/// drop(conn);
/// manager.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RwLock<HashMap<String, Arc<dyn Connector>>>,
    closed: AtomicBool,
    events: broadcast::Sender<Event>,
    /// The connectors a config declared (by `from_config` or `reload`), with the config
    /// each was built from; the ones registered in code are not here.
    declared: Mutex<BTreeMap<String, Declared>>,
    /// `on_connect` hooks by connector name.
    hooks: RwLock<HashMap<String, AnyHook>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        f.debug_struct("Manager")
            .field("connectors", &names)
            .field("closed", &self.inner.closed.load(Ordering::Acquire))
            .finish()
    }
}

impl Default for Manager {
    fn default() -> Self {
        Manager::new()
    }
}

/// The outcome of [`Manager::health_check`]: one entry per connector, by name.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// Every connector's check, sorted by name.
    pub checks: Vec<HealthCheck>,
}

/// One connector's check.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// The connector's name.
    pub name: String,
    /// The connector's kind.
    pub kind: Kind,
    /// How long the check took, or why it failed.
    pub result: Result<Duration>,
}

impl HealthReport {
    /// True when every check succeeded.
    pub fn is_healthy(&self) -> bool {
        self.checks.iter().all(|c| c.result.is_ok())
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &HealthCheck> {
        self.checks.iter().filter(|c| c.result.is_err())
    }
}

impl Manager {
    /// An empty manager.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Manager {
            inner: Arc::new(Inner {
                registry: RwLock::new(HashMap::new()),
                closed: AtomicBool::new(false),
                events,
                declared: Mutex::default(),
                hooks: RwLock::default(),
            }),
        }
    }

    /// Validates the whole config (every problem at once, nothing connected), then
    /// registers every connector concurrently. If one fails to connect, those already
    /// connected are closed and the first error (by kind, then name) is returned.
    ///
    /// The same as [`Manager::new`] followed by [`reload`](Manager::reload); use those
    /// two to register [`on_connect`](Manager::on_connect) hooks first.
    pub async fn from_config(config: ManagerConfig) -> Result<Manager> {
        let manager = Manager::new();
        manager.reload(config).await?;
        Ok(manager)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed { origin: None });
        }
        Ok(())
    }

    /// The Redis pool registered as `name`.
    pub fn redis(&self, name: &str) -> Result<RedisPool> {
        self.pool_of(name, "redis")
    }

    /// The etcd pool registered as `name`.
    pub fn etcd(&self, name: &str) -> Result<EtcdPool> {
        self.pool_of(name, "etcd")
    }

    /// The pool of any backend registered as `name`, typed by its bb8 manager.
    pub fn pool<M>(&self, name: &str) -> Result<Pool<M>>
    where
        M: Bb8Manager,
    {
        self.pool_of(name, std::any::type_name::<M>())
    }

    fn pool_of<M>(&self, name: &str, expected: &str) -> Result<Pool<M>>
    where
        M: Bb8Manager,
    {
        let connector = self.connector(name)?;
        match connector.as_any().downcast_ref::<Pool<M>>() {
            Some(pool) => Ok(pool.clone()),
            None => Err(Error::WrongType {
                name: name.to_owned(),
                expected: expected.to_owned(),
                actual: connector.kind().clone(),
            }),
        }
    }

    /// The connector registered as `name`, behind the object-safe interface.
    pub fn connector(&self, name: &str) -> Result<Arc<dyn Connector>> {
        self.check_open()?;
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                name: name.to_owned(),
            })
    }

    /// The names of every registered connector, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Unregisters `name` and closes it (see [`Pool::close`]).
    pub async fn remove(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let removed = {
            let mut registry = self.write();
            self.declared().remove(name);
            registry.remove(name)
        };
        match removed {
            Some(c) => c.disconnect().await,
            None => Err(Error::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// Checks every connector now, concurrently; each check is bounded by its
    /// `connect_timeout`. Failed checks move their connector to `Reconnecting`.
    pub async fn health_check(&self) -> HealthReport {
        let connectors = self.snapshot();
        let checks = join_all(connectors.iter().map(|c| async move {
            HealthCheck {
                name: c.name().to_owned(),
                kind: c.kind().clone(),
                result: c.health_check().await,
            }
        }))
        .await;
        HealthReport { checks }
    }

    /// A snapshot of every connector, sorted by name; free of secrets.
    pub fn status(&self) -> Vec<Status> {
        self.snapshot().iter().map(|c| c.status()).collect()
    }

    #[cfg(feature = "axum")]
    /// [`status`](Manager::status), for a probe: a connector that is down and due a
    /// check is asked for one first (see [`Connector::request_check`]), so a probe polled
    /// more often than `reconnect_interval` sees a returning server within it.
    pub(crate) fn probe_status(&self) -> Vec<Status> {
        let connectors = self.snapshot();
        connectors.iter().for_each(|c| c.request_check());
        connectors.iter().map(|c| c.status()).collect()
    }

    /// Every state change of every connector from now on, in order per connector.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Closes every connector concurrently (each drains up to its `drain_timeout`).
    /// Afterwards lookups and checkouts are [`Error::Closed`]. Calling it again does
    /// nothing.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let drained: Vec<Arc<dyn Connector>> = {
            let mut registry = self.write();
            self.declared().clear();
            registry.drain().map(|(_, c)| c).collect()
        };
        let results = join_all(drained.iter().map(|c| c.disconnect())).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
    }

    /// Records every connector's metrics now (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        for s in self.status() {
            crate::metrics::record(&s);
        }
    }

    /// True once [`close`](Manager::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> Vec<Arc<dyn Connector>> {
        let mut all: Vec<Arc<dyn Connector>> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<dyn Connector>>> {
        read(&self.inner.registry)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Arc<dyn Connector>>> {
        write(&self.inner.registry)
    }

    /// Taken while holding the registry's write lock, when both change.
    fn declared(&self) -> MutexGuard<'_, BTreeMap<String, Declared>> {
        lock(&self.inner.declared)
    }
}
