//! The Redis backend: [`RedisConnectionManager`] (a `bb8::ManageConnection` and a
//! [`Backend`]), the [`RedisConnection`] a checkout derefs to, the
//! [`SharedRedisConnection`] that [`RedisPool::multiplexed`] hands out, and [`RedisPool`].
//!
//! A connector reaches one server (`addr`), the master a set of sentinels names
//! (`sentinel`), or a Redis Cluster (`cluster`), always through the redis crate's own
//! clients: a connection is its `MultiplexedConnection` (to one server, over TCP and TLS
//! alike, speaking RESP3) or its `ClusterConnection`. connhub adds only what a pool needs to know about it: whether it
//! broke. The crate reports a connection the server closed through its push sender
//! (`PushKind::Disconnection`), so a connection closed while idle (a server `timeout`, a
//! NAT or load balancer) is dropped at the next checkout without a round trip and without
//! a caller seeing it. Unlike bb8-redis, a checkout sends no `PING`: the round trip
//! belongs to the health engine.

mod check;
mod commands;
mod connection;
mod errors;
mod link;
mod meta;
mod nodes;
mod resends;
mod route;
mod sentinel;
mod subscription;
mod telemetry;
mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{AsyncConnectionConfig, PushInfo, PushKind};

use check::check;
pub use commands::Idempotent;
pub use connection::{RedisConnection, SharedRedisConnection};
pub(crate) use errors::classify;
use errors::invalid;
use link::Link;
use meta::ConnMeta;
use resends::Resends;
pub use subscription::{Subscription, SubscriptionItem, Topics};
use telemetry::Telemetry;
use topology::Topology;

use crate::config::RedisConfig;
use crate::connector::BoxFuture;
use crate::error::{Error, Result};
use crate::health::LossSignal;
use crate::pool::shared::Shared;
use crate::pool::{Backend, Pool, PooledConnection};
use crate::status::Kind;

/// A pool of Redis connections; what [`Manager::redis`](crate::Manager::redis) returns.
///
/// ```no_run
/// # async fn demo(manager: connhub::Manager) -> Result<(), Box<dyn std::error::Error>> {
/// use connhub::redis::AsyncCommands;
/// let pool = manager.redis("cache")?;
/// let mut conn = pool.get().await?;
/// let _: () = conn.set("greeting", "hello").await?;
/// let v: String = conn.get("greeting").await?;
/// # Ok(()) }
/// ```
pub type RedisPool = Pool<RedisConnectionManager>;

/// A checked-out Redis connection.
pub type PooledRedisConnection = PooledConnection<RedisConnectionManager>;

/// Makes Redis connections for bb8, and tells the pool how to check them. Cloning shares
/// it.
#[derive(Clone)]
pub struct RedisConnectionManager {
    inner: Arc<ManagerInner>,
}

struct ManagerInner {
    name: Arc<str>,
    topology: Topology,
    async_config: AsyncConnectionConfig,
    max_retries: u32,
    tls: bool,
    connect_timeout: Duration,
    command_timeout: Option<Duration>,
    /// Sent with `CLIENT SETNAME` on every new connection.
    client_name: Option<String>,
    /// The connections behind [`RedisPool::multiplexed`].
    shared: Shared<SharedRedisConnection>,
    /// A connection was made once: a hang-up during a later TLS handshake is a server
    /// restarting, not a TLS set-up problem.
    reached: AtomicBool,
    /// Told when the server closes a connection (the crate's `Disconnection` push).
    losses: LossSignal,
    /// The database index selected on every connection.
    db: u32,
    /// Which commands the server flags read-only, learned as they are needed.
    readonly: commands::ReadOnly,
    /// Commands sent again when that was safe, and how many times one may be.
    resends: Arc<Resends>,
    /// Spans and duration samples of commands on the pool itself.
    telemetry: Telemetry,
}

impl std::fmt::Debug for RedisConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnectionManager")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.topology.endpoint())
            .finish_non_exhaustive()
    }
}

impl RedisConnectionManager {
    /// A manager for the connector `name`. The config is validated first.
    pub fn new(name: &str, config: &RedisConfig) -> Result<Self> {
        let mut errors = crate::error::ConfigErrors::default();
        config.validate(&format!("redis.{name}"), &mut errors);
        errors.into_result()?;
        let (topology, tls) = Topology::build(name, config)?;
        let telemetry = Telemetry::new(name.into(), config.db, topology.server());
        // `command_timeout` is the crate's response timeout; a blocking command on a
        // checkout lifts it for its own call (`RedisConnection`).
        let async_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connector.connect_timeout))
            .set_response_timeout(config.command_timeout);
        Ok(RedisConnectionManager {
            inner: Arc::new(ManagerInner {
                name: name.into(),
                topology,
                async_config,
                max_retries: config.max_retries,
                tls,
                connect_timeout: config.connector.connect_timeout,
                command_timeout: config.command_timeout,
                client_name: config.client_name.clone(),
                shared: Shared::new(
                    config.multiplexed_connections,
                    SharedRedisConnection::is_usable,
                ),
                reached: AtomicBool::new(false),
                losses: LossSignal::new(),
                db: config.db,
                readonly: commands::ReadOnly::default(),
                resends: Arc::new(Resends::new(name.into(), config.command_retries)),
                telemetry,
            }),
        })
    }

    /// Where it connects: `host:port`; for Sentinel, the current master and the
    /// sentinels; for a cluster, the nodes it was given.
    pub fn endpoint(&self) -> String {
        self.inner.topology.endpoint()
    }

    /// Opens one connection, retrying up to `max_retries` times unless the failure is
    /// permanent. The connection's push sender marks it broken when the crate reports it
    /// closed.
    async fn open(&self) -> Result<(Link, Arc<ConnMeta>)> {
        let m = &*self.inner;
        let mut attempt = 0;
        loop {
            let broken = Arc::new(AtomicBool::new(false));
            let flag = broken.clone();
            let losses = m.losses.clone();
            let config = m
                .async_config
                .clone()
                .set_push_sender(move |push: PushInfo| {
                    if push.kind == PushKind::Disconnection {
                        flag.store(true, Ordering::Relaxed);
                        losses.connection_lost();
                    }
                    Ok::<(), std::convert::Infallible>(())
                });
            // Sentinel lookups, cluster discovery and naming take several round trips:
            // one bound for them all.
            let connect = async {
                let (mut link, watch) = m.topology.connect(&config).await?;
                if let Some(name) = &m.client_name {
                    let setname = redis::cmd("CLIENT").arg("SETNAME").arg(name).clone();
                    link.send(&setname).await?;
                }
                Ok((link, watch))
            };
            let opened = tokio::time::timeout(m.connect_timeout, connect)
                .await
                .unwrap_or_else(|_| Err(topology::hung(m.connect_timeout)));
            match opened {
                Ok((link, watch)) => {
                    m.reached.store(true, Ordering::Relaxed);
                    tracing::debug!(connector = %m.name, kind = "redis", endpoint = %m.topology.endpoint(), "connected");
                    let limit = m.command_timeout;
                    return Ok((
                        link,
                        ConnMeta::new(broken, watch, limit, m.losses.clone(), m.resends.clone()),
                    ));
                }
                Err(e) => {
                    let err = self.classify(e);
                    if attempt >= m.max_retries || err.is_permanent() {
                        return Err(err);
                    }
                    attempt += 1;
                }
            }
        }
    }
}

impl bb8::ManageConnection for RedisConnectionManager {
    type Connection = RedisConnection;
    type Error = Error;

    async fn connect(&self) -> Result<RedisConnection> {
        let (inner, meta) = self.open().await?;
        Ok(RedisConnection { inner, meta })
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<()> {
        check(&self.inner, conn).await
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.is_broken()
    }
}

impl Backend for RedisConnectionManager {
    type Manager = RedisConnectionManager;

    fn kind(&self) -> Kind {
        Kind::REDIS
    }

    fn endpoint(&self) -> String {
        self.inner.topology.endpoint()
    }

    fn is_broken(&self, conn: &RedisConnection) -> Option<bool> {
        Some(conn.is_broken())
    }

    fn checks_locally(&self) -> bool {
        true
    }

    fn probe<'a>(
        &'a self,
        _manager: &'a Self,
        conn: &'a mut RedisConnection,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(check(&self.inner, conn))
    }

    fn classify(&self, _connector: &str, error: Error) -> Error {
        error
    }

    fn retire(&self, _manager: &Self) {
        self.inner.shared.clear();
    }

    fn loss_signal(&self) -> Option<LossSignal> {
        Some(self.inner.losses.clone())
    }

    fn retried_commands(&self) -> u64 {
        self.inner.resends.count()
    }
}

impl RedisPool {
    /// A shared connection for commands that keep no connection state, with no exclusive
    /// checkout: many tasks send on the same socket at once and redis pipelines their
    /// requests, which is the fastest way to run many small commands.
    ///
    /// Use it for GET, SET, INCR, EXPIRE, EVALSHA, pipelines (non-transactional) and the
    /// like. Use [`get`](crate::Pool::get) instead for anything that changes or relies on
    /// the connection's state: blocking commands (BLPOP, XREAD BLOCK), WATCH/MULTI/EXEC,
    /// SELECT, CLIENT SETNAME — on a shared socket they would block or leak into every
    /// other user.
    ///
    /// It fails fast like `get()` while the connector is down. The connections are
    /// separate from the pool's (`multiplexed_connections` of them, default 1), opened on
    /// first use and replaced when they break or the connector goes down. A handle may be
    /// kept: once its connection broke (lost; on Sentinel, its server no longer the
    /// master; on a cluster, slots moved) its next command goes on the pool's current one,
    /// and a command that met the loss follows the pool's retry rule (sent again only when
    /// that cannot apply it twice).
    ///
    /// ```no_run
    /// # async fn demo(pool: connhub::RedisPool) -> Result<(), Box<dyn std::error::Error>> {
    /// use connhub::redis::AsyncCommands;
    /// let mut conn = pool.multiplexed().await?;
    /// let hits: i64 = conn.incr("hits", 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn multiplexed(&self) -> Result<SharedRedisConnection> {
        let this = self.current();
        // Cloned only when an open starts: the open outlives this call's borrow.
        let open = || {
            let (pool, manager) = (this.clone(), this.manager().clone());
            async move {
                match manager.open().await {
                    Ok((inner, meta)) => {
                        meta.set_home(&pool);
                        Ok(SharedRedisConnection { inner, meta })
                    }
                    Err(e) => Err(pool.connect_failed(e)),
                }
            }
        };
        this.manager()
            .inner
            .shared
            .get(this, open, SharedRedisConnection::clone)
            .await
    }
}
