//! The Redis backend: [`RedisConnectionManager`] (a `bb8::ManageConnection` and a
//! [`Backend`]), the [`RedisConnection`] a checkout derefs to, the
//! [`SharedRedisConnection`] that [`RedisPool::multiplexed`] hands out, and [`RedisPool`].
//!
//! Every connection is the redis crate's own `MultiplexedConnection`, over TCP and TLS
//! alike, speaking RESP3. connhub adds only what a pool needs to know about it: whether it
//! broke. The crate reports a connection the server closed through its push sender
//! (`PushKind::Disconnection`), so a connection closed while idle (a server `timeout`, a
//! NAT or load balancer) is dropped at the next checkout without a round trip and without
//! a caller seeing it. Unlike bb8-redis, a checkout sends no `PING`: the round trip
//! belongs to the health engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, ProtocolVersion,
    PushInfo, PushKind, RedisFuture, RedisResult, Value,
};

use crate::config::{RedisConfig, parse_redis};
use crate::error::{Error, Origin, Result};
use crate::pool::shared::Shared;
use crate::pool::{Backend, Pool, PooledConnection};
use crate::status::{BoxFuture, Kind};

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
    endpoint: String,
    client: redis::Client,
    async_config: AsyncConnectionConfig,
    max_retries: u32,
    tls: bool,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The connections behind [`RedisPool::multiplexed`].
    shared: Shared<SharedRedisConnection>,
    /// A connection was made once: a hang-up during a later TLS handshake is a server
    /// restarting, not a TLS set-up problem.
    reached: AtomicBool,
}

impl std::fmt::Debug for RedisConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnectionManager")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.endpoint)
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
        // RESP3: the crate reports a closed connection through the push sender only then.
        let mut settings = redis::RedisConnectionInfo::default()
            .set_db(db)
            .set_protocol(ProtocolVersion::RESP3);
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
            inner: Arc::new(ManagerInner {
                name: name.into(),
                endpoint,
                client,
                async_config,
                max_retries: config.max_retries,
                tls,
                connect_timeout: config.connector.connect_timeout,
                command_timeout: config.command_timeout.unwrap_or(Duration::MAX),
                shared: Shared::new(
                    config.multiplexed_connections,
                    SharedRedisConnection::is_usable,
                ),
                reached: AtomicBool::new(false),
            }),
        })
    }

    /// `host:port` it connects to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    fn classify(&self, e: redis::RedisError) -> Error {
        let m = &*self.inner;
        let reached = m.reached.load(Ordering::Relaxed);
        if m.tls
            && let Some(message) = handshake_failure(&e, reached)
        {
            return Error::Tls {
                origin: Origin::new(m.name.to_string(), Kind::REDIS),
                message,
            };
        }
        classify(&m.name, &m.endpoint, "connect", m.connect_timeout, e)
    }

    /// Opens one connection, retrying up to `max_retries` times unless the failure is
    /// permanent. The connection's push sender marks it broken when the crate reports it
    /// closed.
    async fn open(&self) -> Result<(MultiplexedConnection, Arc<ConnMeta>)> {
        let m = &*self.inner;
        let mut attempt = 0;
        loop {
            let broken = Arc::new(AtomicBool::new(false));
            let flag = broken.clone();
            let config = m
                .async_config
                .clone()
                .set_push_sender(move |push: PushInfo| {
                    if push.kind == PushKind::Disconnection {
                        flag.store(true, Ordering::Relaxed);
                    }
                    Ok::<(), std::convert::Infallible>(())
                });
            match m
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(conn) => {
                    m.reached.store(true, Ordering::Relaxed);
                    tracing::debug!(connector = %m.name, kind = "redis", endpoint = %m.endpoint, "connected");
                    return Ok((conn, Arc::new(ConnMeta { broken })));
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

/// A client for a TLS address, with the CA and client certificate from the `tls` block.
fn tls_client(
    name: &str,
    config: &RedisConfig,
    info: redis::ConnectionInfo,
) -> Result<redis::Client> {
    let files = config.tls.load(name, &Kind::REDIS)?;
    let tls_error = |e: redis::RedisError| Error::Tls {
        origin: Origin::new(name.to_owned(), Kind::REDIS),
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
/// certificate does) while no connection has ever been made (`reached` false). Once one
/// was, a hang-up is a server restarting: a connection error to retry, not a permanent
/// TLS error.
fn handshake_failure(e: &redis::RedisError, reached: bool) -> Option<String> {
    if let Some(reason) = crate::config::tls_failure(&format!("{e} ({e:?})")) {
        return Some(reason);
    }
    if !reached && e.is_connection_dropped() && !e.is_connection_refusal() {
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
    let origin = Origin::new(name, Kind::REDIS);
    let auth = matches!(e.kind(), ErrorKind::AuthenticationFailed)
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || e.code()
            .is_some_and(|c| matches!(c, "WRONGPASS" | "NOAUTH" | "NOPERM"));
    if auth {
        return Error::Auth {
            origin: origin.clone(),
            message: e.to_string(),
        };
    }
    if e.is_timeout() {
        return Error::Timeout {
            origin: origin.clone(),
            what,
            after,
            detail: None,
            last_error: Some(Box::new(Error::Backend {
                origin: origin.clone(),
                source: Arc::new(e),
            })),
        };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return Error::Connect {
            origin: origin.clone(),
            endpoint: endpoint.to_owned(),
            source: Arc::new(e),
        };
    }
    Error::Backend {
        origin: origin.clone(),
        source: Arc::new(e),
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
        ping(&self.inner, &mut conn.inner).await
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
        self.inner.endpoint.clone()
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
        Box::pin(ping(&self.inner, &mut conn.inner))
    }

    fn classify(&self, _connector: &str, error: Error) -> Error {
        error
    }

    fn retire(&self, _manager: &Self) {
        self.inner.shared.clear();
    }
}

/// Sends `PING`; the health check of a Redis connection.
async fn ping(m: &ManagerInner, conn: &mut MultiplexedConnection) -> Result<()> {
    let pong: RedisResult<Value> = redis::cmd("PING").query_async(conn).await;
    pong.map(drop)
        .map_err(|e| classify(&m.name, &m.endpoint, "PING", m.command_timeout, e))
}

/// What a connection knows about itself; shared by the clones of a shared connection.
#[derive(Debug)]
struct ConnMeta {
    broken: Arc<AtomicBool>,
}

impl ConnMeta {
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Marks the connection broken when a request failed at the connection level, or
    /// timed out (a hung server: the next checkout opens a fresh connection instead,
    /// which is what tells the health engine the server is gone).
    fn observe<T>(&self, r: &RedisResult<T>) {
        if let Err(e) = r
            && (e.is_connection_dropped()
                || e.is_timeout()
                || (e.is_unrecoverable_error() && e.is_io_error()))
        {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

/// A pooled Redis connection, used by one task at a time: the redis crate's
/// `MultiplexedConnection`, plus whether it broke (the pool then drops it).
///
/// It implements [`redis::aio::ConnectionLike`], so `redis::cmd(..).query_async(&mut *conn)`
/// and [`redis::AsyncCommands`] work on a checkout. It speaks RESP3. For pub/sub and other
/// push-based use, take a connection of the redis crate's own (`redis::Client::
/// get_async_pubsub`).
pub struct RedisConnection {
    inner: MultiplexedConnection,
    meta: Arc<ConnMeta>,
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

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SharedRedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedisConnection")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// True once the server closed the connection, a request on it failed at the
    /// connection level or timed out, or a request was cancelled before its reply came;
    /// it is dropped when it goes back to the pool.
    pub fn is_broken(&self) -> bool {
        self.meta.is_broken()
    }

    /// The redis multiplexed connection underneath.
    pub fn multiplexed(&self) -> &MultiplexedConnection {
        &self.inner
    }
}

impl SharedRedisConnection {
    /// True once the connection broke; the pool then opens a new one for later callers.
    pub fn is_broken(&self) -> bool {
        self.meta.is_broken()
    }

    fn is_usable(&self) -> bool {
        !self.is_broken()
    }

    /// The redis multiplexed connection underneath. Clones of it are not tracked by the
    /// pool.
    pub fn multiplexed(&self) -> &MultiplexedConnection {
        &self.inner
    }
}

/// Marks a connection broken if a request on it is dropped before its reply came (a
/// cancelled future): the server still owes that reply, and a blocking command (BLPOP)
/// would keep the connection blocked, and could take data, for the next user.
struct Unfinished<'a> {
    broken: &'a AtomicBool,
    done: bool,
}

impl<'a> Unfinished<'a> {
    fn new(meta: &'a ConnMeta) -> Self {
        Unfinished {
            broken: &meta.broken,
            done: false,
        }
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut unfinished = Unfinished::new(&self.meta);
            let r = self.inner.send_packed_command(cmd).await;
            unfinished.done = true;
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
            let mut unfinished = Unfinished::new(&self.meta);
            let r = self.inner.send_packed_commands(cmd, offset, count).await;
            unfinished.done = true;
            self.meta.observe(&r);
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Shared by many tasks, so a cancelled request does not retire the connection (the
/// multiplexed connection drops its late reply); blocking commands do not belong here.
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
    /// first use and replaced when they break or the connector goes down.
    ///
    /// ```no_run
    /// # async fn demo(pool: connhub::RedisPool) -> Result<(), Box<dyn std::error::Error>> {
    /// use connhub::redis::AsyncCommands;
    /// let mut conn = pool.multiplexed().await?;
    /// let hits: i64 = conn.incr("hits", 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn multiplexed(&self) -> Result<SharedRedisConnection> {
        let manager = self.manager();
        let open = || async {
            match manager.open().await {
                Ok((inner, meta)) => Ok(SharedRedisConnection { inner, meta }),
                Err(e) => Err(self.connect_failed(e)),
            }
        };
        manager
            .inner
            .shared
            .get(self, open, SharedRedisConnection::clone)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::handshake_failure;

    #[test]
    fn a_hang_up_is_a_tls_problem_only_before_the_first_connection() {
        let reset =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(reset.is_connection_dropped());
        // Never connected: most likely a server that wants a client certificate.
        let first = handshake_failure(&reset, false).expect("a TLS problem");
        assert!(first.contains("client certificate"), "{first}");
        // Connected before: a restarting server, to retry.
        assert_eq!(handshake_failure(&reset, true), None);
        // A refused connection is never a TLS problem.
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(handshake_failure(&refused, false), None);
    }
}
