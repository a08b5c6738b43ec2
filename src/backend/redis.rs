//! The Redis backend: [`RedisConnectionManager`] (a `bb8::ManageConnection`), the
//! [`RedisConnection`] a checkout derefs to, the [`SharedRedisConnection`] that
//! [`RedisPool::multiplexed`] hands out, and [`RedisPool`].
//!
//! Unlike bb8-redis, a checkout costs no `PING`: a connection is handed out unless it was
//! seen failing (a connection-level I/O error marks it broken), was left with a request
//! unfinished, or was made before the connector last went down. The round trip belongs to
//! the background health check.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture,
    RedisResult, Value,
};

use super::redis_direct::{Dial, DirectLink};
use crate::config::{RedisConfig, Secret, parse_redis};
use crate::connector::{BoxFuture, Kind};
use crate::error::{Error, Result};
use crate::health::{Liveness, Retired};
use crate::pool::{Pool, PooledConnection};

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
pub type PooledRedisConnection<'a> = PooledConnection<'a, RedisConnectionManager>;

/// Makes and validates Redis connections for bb8.
///
/// Over plain TCP a pooled connection is a socket of its own that the task holding it
/// reads and writes directly (no driver task in between); over TLS it is a redis
/// multiplexed connection.
#[derive(Clone)]
pub struct RedisConnectionManager {
    name: Arc<str>,
    endpoint: String,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<Secret>,
    db: i64,
    client: redis::Client,
    async_config: AsyncConnectionConfig,
    max_retries: u32,
    tls: bool,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
    command_timeout: Duration,
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for RedisConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnectionManager")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RedisConnectionManager {
    /// A manager for the connector `name`. The config is validated first.
    pub fn new(name: &str, config: &RedisConfig) -> Result<Self> {
        let mut errors = crate::error::ConfigErrors::default();
        config.validate(&format!("redis.{name}"), &mut errors);
        errors.into_result()?;
        let hp = parse_redis(&config.addr).map_err(|m| invalid(name, "addr", m))?;
        let endpoint = hp.to_string();
        let db = i64::from(hp.db.unwrap_or(config.db));
        let (host, port) = (hp.host.clone(), hp.port);
        let mut settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = &config.password {
            settings = settings.set_password(pw.expose());
        }
        let tls = config.tls.enabled || hp.tls;
        let addr = if tls {
            ConnectionAddr::TcpTls {
                host: hp.host,
                port: hp.port,
                insecure: config.tls.insecure_skip_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(hp.host, hp.port)
        };
        let info = addr
            .into_connection_info()
            .map_err(|e| invalid(name, "addr", e.to_string()))?
            .set_redis_settings(settings);
        let client = if tls {
            tls_client(name, config, info)?
        } else {
            redis::Client::open(info).map_err(|e| invalid(name, "addr", e.to_string()))?
        };
        let async_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connector.connect_timeout))
            .set_response_timeout(config.command_timeout);
        Ok(RedisConnectionManager {
            name: name.into(),
            endpoint,
            host,
            port,
            username: config.username.clone(),
            password: config.password.clone(),
            db,
            client,
            async_config,
            max_retries: config.max_retries,
            tls,
            connect_timeout: config.connector.connect_timeout,
            response_timeout: config.command_timeout,
            command_timeout: config.command_timeout.unwrap_or(Duration::MAX),
            liveness: Arc::default(),
        })
    }

    /// `host:port` it connects to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    fn classify(&self, e: redis::RedisError) -> Error {
        if self.tls
            && let Some(message) = handshake_failure(&e)
        {
            return Error::Tls {
                connector: self.name.to_string(),
                kind: Kind::REDIS,
                message,
            };
        }
        classify(
            &self.name,
            &self.endpoint,
            "connect",
            self.connect_timeout,
            e,
        )
    }
}

/// A client for a TLS address, with the CA and client certificate from the `tls` block.
fn tls_client(
    name: &str,
    config: &RedisConfig,
    info: redis::ConnectionInfo,
) -> Result<redis::Client> {
    let files = config.tls.load(name, &Kind::REDIS)?;
    let tls_error = |e: redis::RedisError| Error::Tls {
        connector: name.to_owned(),
        kind: Kind::REDIS,
        message: e.to_string(),
    };
    if files.ca.is_none() && files.identity.is_none() {
        return redis::Client::open(info).map_err(tls_error);
    }
    let certificates = redis::TlsCertificates {
        client_tls: files
            .identity
            .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                client_cert,
                client_key,
            }),
        root_cert: files.ca,
    };
    redis::Client::build_with_tls(info, certificates).map_err(tls_error)
}

fn invalid(name: &str, key: &str, message: impl Into<String>) -> Error {
    let mut errors = crate::error::ConfigErrors::default();
    errors.push(format!("redis.{name}.{key}"), message);
    Error::InvalidConfig(errors)
}

/// Why a TLS connection attempt failed, if TLS is the reason: a certificate problem, or
/// the server hanging up during the handshake (as a server that wants a client
/// certificate does).
fn handshake_failure(e: &redis::RedisError) -> Option<String> {
    if let Some(reason) = crate::config::tls_failure(&format!("{e} ({e:?})")) {
        return Some(reason);
    }
    if e.is_connection_dropped() && !e.is_connection_refusal() {
        return Some(format!(
            "the server closed the connection during the TLS handshake (does it require a client certificate?): {e}"
        ));
    }
    None
}

/// Sorts a redis error into connhub's kinds; `what` and `after` describe the limit a
/// timeout reached.
pub(crate) fn classify(
    name: &str,
    endpoint: &str,
    what: &'static str,
    after: Duration,
    e: redis::RedisError,
) -> Error {
    use redis::{ErrorKind, ServerErrorKind};
    let connector = name.to_owned();
    let auth = matches!(e.kind(), ErrorKind::AuthenticationFailed)
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || e.code()
            .is_some_and(|c| matches!(c, "WRONGPASS" | "NOAUTH" | "NOPERM"));
    if auth {
        return Error::Auth {
            connector,
            kind: Kind::REDIS,
            message: e.to_string(),
        };
    }
    if e.is_timeout() {
        return Error::Timeout {
            connector: connector.clone(),
            kind: Kind::REDIS,
            what,
            after,
            last_error: Some(Box::new(Error::Backend {
                connector,
                kind: Kind::REDIS,
                source: Arc::new(e),
            })),
        };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return Error::Connect {
            connector,
            kind: Kind::REDIS,
            endpoint: endpoint.to_owned(),
            source: Arc::new(e),
        };
    }
    Error::Backend {
        connector,
        kind: Kind::REDIS,
        source: Arc::new(e),
    }
}

impl bb8::ManageConnection for RedisConnectionManager {
    type Connection = RedisConnection;
    type Error = Error;

    async fn connect(&self) -> Result<RedisConnection> {
        let (link, meta) = self
            .open(|| async {
                if self.tls {
                    return self
                        .multiplexed()
                        .await
                        .map(|m| Link::Multiplexed(Box::new(m)));
                }
                let dial = Dial {
                    host: &self.host,
                    port: self.port,
                    username: self.username.as_deref(),
                    password: self.password.as_ref().map(Secret::expose),
                    db: self.db,
                };
                let connect = DirectLink::connect(&dial, self.response_timeout);
                match tokio::time::timeout(self.connect_timeout, connect).await {
                    Ok(r) => r.map(|l| Link::Direct(Box::new(l))),
                    Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut).into()),
                }
            })
            .await?;
        Ok(RedisConnection { link, meta })
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<()> {
        if !conn.is_usable() {
            return Err(Error::Backend {
                connector: self.name.to_string(),
                kind: Kind::REDIS,
                source: Arc::new(Retired),
            });
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        !conn.is_usable()
    }
}

impl RedisConnectionManager {
    /// Makes a connection with `dial`, retrying up to `max_retries` times unless the
    /// failure is permanent; stamps it with the liveness epoch from before the attempt.
    async fn open<L, F>(&self, dial: impl Fn() -> F) -> Result<(L, Arc<ConnMeta>)>
    where
        F: Future<Output = RedisResult<L>>,
    {
        if self.liveness.is_closed() {
            return Err(Error::Closed {
                connector: self.name.to_string(),
            });
        }
        // Stamped before connecting: if the connector goes down meanwhile, this
        // connection is retired with the others.
        let epoch = self.liveness.epoch();
        let mut attempt = 0;
        loop {
            match dial().await {
                Ok(link) => {
                    tracing::debug!(connector = %self.name, kind = "redis", endpoint = %self.endpoint, "connected");
                    let meta = Arc::new(ConnMeta {
                        epoch,
                        broken: AtomicBool::new(false),
                        liveness: self.liveness.clone(),
                        name: self.name.clone(),
                        endpoint: self.endpoint.clone(),
                        command_timeout: self.command_timeout,
                    });
                    return Ok((link, meta));
                }
                Err(e) => {
                    let err = self.classify(e);
                    if attempt >= self.max_retries || err.is_permanent() {
                        return Err(err);
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn multiplexed(&self) -> RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.async_config)
            .await
    }

    /// A connection for [`RedisPool::multiplexed`]: always a multiplexed one, since it is
    /// shared.
    pub(crate) async fn connect_shared(&self) -> Result<SharedRedisConnection> {
        let (inner, meta) = self.open(|| self.multiplexed()).await?;
        Ok(SharedRedisConnection { inner, meta })
    }
}

/// Sends `PING`; the health check of a Redis connector.
pub(crate) fn ping(conn: &mut RedisConnection) -> BoxFuture<'_, Result<()>> {
    Box::pin(async move {
        let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut *conn).await;
        match pong {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(
                &conn.meta.name,
                &conn.meta.endpoint,
                "PING",
                conn.meta.command_timeout,
                e,
            )),
        }
    })
}

/// A pooled Redis connection, used by one task at a time: it remembers whether it failed,
/// so the pool never hands it out again.
///
/// Over plain TCP the task holding it writes commands and reads replies on the socket
/// itself; over TLS it is a redis multiplexed connection. Commands that change how replies
/// arrive (SUBSCRIBE and the other pub/sub subscriptions, MONITOR, CLIENT REPLY) are
/// refused with an error on a plain-TCP connection: use `redis::Client::get_async_pubsub`
/// for pub/sub.
///
/// It implements [`redis::aio::ConnectionLike`], so `redis::cmd(..).query_async(&mut *conn)`
/// and [`redis::AsyncCommands`] work on a checkout.
pub struct RedisConnection {
    link: Link,
    /// Behind one pointer: the pool moves connections around, so they stay small.
    meta: Arc<ConnMeta>,
}

enum Link {
    Direct(Box<DirectLink>),
    Multiplexed(Box<MultiplexedConnection>),
}

/// A connection shared by many tasks at once: what [`RedisPool::multiplexed`] hands out.
/// Cloning shares the socket, as redis's `MultiplexedConnection` does.
///
/// It implements [`redis::aio::ConnectionLike`], so [`redis::AsyncCommands`] work on it.
#[derive(Clone)]
pub struct SharedRedisConnection {
    inner: MultiplexedConnection,
    meta: Arc<ConnMeta>,
}

/// What a connection knows about itself; shared by the clones of a shared connection.
struct ConnMeta {
    epoch: u64,
    broken: AtomicBool,
    liveness: Arc<Liveness>,
    name: Arc<str>,
    endpoint: String,
    command_timeout: Duration,
}

impl ConnMeta {
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    fn is_usable(&self) -> bool {
        !self.is_broken() && self.liveness.is_current(self.epoch)
    }

    /// Marks the connection broken on a connection-level failure, and asks the health
    /// task to look at the server on a timeout.
    fn observe<T>(&self, r: &RedisResult<T>) {
        if let Err(e) = r {
            if e.is_connection_dropped() || e.is_unrecoverable_error() && e.is_io_error() {
                self.broken.store(true, Ordering::Relaxed);
                self.liveness.report_trouble();
            } else if e.is_timeout() {
                self.liveness.report_trouble();
            }
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("epoch", &self.meta.epoch)
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SharedRedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedisConnection")
            .field("epoch", &self.meta.epoch)
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// True once the connection saw a connection-level failure, or a request on it was
    /// left unfinished (cancelled or timed out); it will be dropped when it goes back to
    /// the pool.
    pub fn is_broken(&self) -> bool {
        self.meta.is_broken()
            || match &self.link {
                Link::Direct(l) => !l.is_clean(),
                Link::Multiplexed(_) => false,
            }
    }

    /// Neither broken nor made before the connector last went down (or closed).
    pub(crate) fn is_usable(&self) -> bool {
        !self.is_broken() && self.meta.liveness.is_current(self.meta.epoch)
    }
}

impl SharedRedisConnection {
    /// True once the connection saw a connection-level failure; the pool then opens a new
    /// one for later callers.
    pub fn is_broken(&self) -> bool {
        self.meta.is_broken()
    }

    /// Neither broken nor made before the connector last went down (or closed).
    pub(crate) fn is_usable(&self) -> bool {
        self.meta.is_usable()
    }

    /// The redis multiplexed connection underneath. Clones of it are not tracked by the
    /// pool.
    pub fn multiplexed(&self) -> &MultiplexedConnection {
        &self.inner
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = match &mut self.link {
                Link::Direct(l) => l.request(cmd).await,
                Link::Multiplexed(m) => m.send_packed_command(cmd).await,
            };
            self.meta.observe(&r);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = match &mut self.link {
                Link::Direct(l) => l.request_pipeline(cmd, offset, count).await,
                Link::Multiplexed(m) => m.send_packed_commands(cmd, offset, count).await,
            };
            self.meta.observe(&r);
            r
        })
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Direct(l) => l.db(),
            Link::Multiplexed(m) => m.get_db(),
        }
    }
}

impl ConnectionLike for SharedRedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.inner.send_packed_command(cmd).await;
            self.meta.observe(&r);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self.inner.send_packed_commands(cmd, offset, count).await;
            self.meta.observe(&r);
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
