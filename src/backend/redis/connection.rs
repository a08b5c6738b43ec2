//! The connections a Redis pool hands out: [`RedisConnection`] (one checkout) and
//! [`SharedRedisConnection`] (what `multiplexed()` hands out), each the redis crate's own
//! connection (a node's `MultiplexedConnection`, or a `ClusterConnection`) plus what the
//! pool needs to know of it: whether it broke.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::Either;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::nodes::ClusterNodes;
use super::resends::Resends;
use super::route::{self, Block};
use super::{RedisConnectionManager, RedisPool};
use crate::health::LossSignal;
use crate::pool::WeakPool;

/// The redis crate's connection underneath.
#[derive(Clone)]
pub(super) enum Link {
    /// One server: a single node, or the master the sentinels named.
    Node(MultiplexedConnection),
    /// A Redis Cluster; the crate routes every command to its node. While a master
    /// does not answer (`nodes`), a command for its slots is refused before it is sent,
    /// and one already sent is given up once it waited a second.
    Cluster(ClusterConnection, Arc<ClusterNodes>),
}

impl Link {
    /// Sends `cmd`; its reply is bounded by the connection's response timeout
    /// (`command_timeout`). Not an async fn: on a single server the caller holds the
    /// crate's own request future, with no state machine of this one's to poll through on
    /// every command. A cluster command is boxed: what it waits on (the node monitor's
    /// bound) stays out of every single-server command's future.
    #[inline(always)]
    pub(super) fn send<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> Either<impl Future<Output = RedisResult<Value>> + 'a, RedisFuture<'a, Value>> {
        match self {
            Link::Node(c) => Either::Left(c.send_packed_command(cmd)),
            Link::Cluster(..) => Either::Right(self.request(cmd)),
        }
    }

    /// Sends a pipeline; its replies are bounded by the connection's response timeout.
    pub(super) async fn send_pipeline(
        &mut self,
        cmd: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Link::Node(c) => c.send_packed_commands(cmd, offset, count).await,
            Link::Cluster(..) => self.request_pipeline(cmd, offset, count).await,
        }
    }

    /// [`send`](Link::send) as the crate's own boxed future, for a caller that would
    /// otherwise hold the crate's request future (over a kilobyte) inside its own: the
    /// pool's commands, whose future is itself boxed per command.
    pub(super) fn request<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Node(c) => c.req_packed_command(cmd),
            Link::Cluster(c, nodes) => match nodes.refused(cmd) {
                Some(e) => Box::pin(std::future::ready(Err(e))),
                None => Box::pin(nodes.bounded(|| nodes.reads(cmd), c.req_packed_command(cmd))),
            },
        }
    }

    /// [`send_pipeline`](Link::send_pipeline) as the crate's own boxed future.
    pub(super) fn request_pipeline<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Node(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c, nodes) => match nodes.refused_pipeline(cmd) {
                Some(e) => Box::pin(std::future::ready(Err(e))),
                None => Box::pin(nodes.bounded(
                    || nodes.reads_pipeline(cmd),
                    c.req_packed_commands(cmd, offset, count),
                )),
            },
        }
    }

    /// Sends a blocking command, its reply bounded by `limit` (none: it may block until
    /// something arrives) instead of `usual`, the response timeout it goes back to. On one
    /// server only: a cluster connection keeps its own response timeout for every command.
    async fn send_blocking(
        &mut self,
        cmd: &Cmd,
        limit: Option<Duration>,
        usual: Option<Duration>,
    ) -> RedisResult<Value> {
        match self {
            Link::Node(c) => {
                c.set_response_timeout(limit.unwrap_or(FOREVER));
                let r = c.send_packed_command(cmd).await;
                c.set_response_timeout(usual.unwrap_or(FOREVER));
                r
            }
            Link::Cluster(c, _) => c.req_packed_command(cmd).await,
        }
    }

    pub(super) fn db(&self) -> i64 {
        match self {
            Link::Node(c) => c.get_db(),
            Link::Cluster(c, _) => c.get_db(),
        }
    }

    fn node(&self) -> Option<&MultiplexedConnection> {
        match self {
            Link::Node(c) => Some(c),
            Link::Cluster(..) => None,
        }
    }

    fn cluster(&self) -> Option<&ClusterConnection> {
        match self {
            Link::Cluster(c, _) => Some(c),
            Link::Node(_) => None,
        }
    }

    pub(super) fn cluster_mut(&mut self) -> Option<&mut ClusterConnection> {
        match self {
            Link::Cluster(c, _) => Some(c),
            Link::Node(_) => None,
        }
    }
}

/// How a connection is judged broken.
#[derive(Debug, Clone)]
pub(super) enum Watch {
    /// A single server: a connection-level error or a timeout breaks it.
    Node,
    /// The master the sentinels named, as the `generation`-th master seen: like `Node`,
    /// and also broken by a `READONLY` reply (it was demoted) or a newer master (a
    /// failover: every connection to the old one is retired).
    Master {
        generation: u64,
        current: Arc<AtomicU64>,
    },
    /// A cluster connection reconnects to its nodes and follows redirections itself. It
    /// is retired once the node monitor reads a slot map that moved slots since it was
    /// made (the `generation`-th): it may still send to a master that failed over. Else
    /// only a request cancelled before its reply, or one that timed out while every
    /// master answers, breaks it: a timeout while a master does not answer at all is
    /// that master's, and a fresh connection would wait for it too.
    Cluster {
        generation: u64,
        nodes: Arc<ClusterNodes>,
    },
}

/// What a connection knows about itself; shared by the clones of a shared connection.
#[derive(Debug)]
pub(super) struct ConnMeta {
    /// Tells this connection apart from every other one the process opened.
    pub(super) id: u64,
    pub(super) broken: Arc<AtomicBool>,
    pub(super) watch: Watch,
    /// How long a command that does not block may wait for its reply.
    pub(super) command_timeout: Option<Duration>,
    /// Told when a request on it timed out: the health engine checks the server at once
    /// (a frozen server closes nothing, so no `Disconnection` tells it).
    losses: LossSignal,
    /// The connector's count of commands sent again, and how many times one may be.
    resends: Arc<Resends>,
    /// For a shared connection, the pool it was opened for: a handle kept on it moves on
    /// to the pool's next one once it breaks.
    home: OnceLock<WeakPool<RedisConnectionManager>>,
}

impl ConnMeta {
    pub(super) fn new(
        broken: Arc<AtomicBool>,
        watch: Watch,
        command_timeout: Option<Duration>,
        losses: LossSignal,
        resends: Arc<Resends>,
    ) -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Arc::new(ConnMeta {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            broken,
            watch,
            command_timeout,
            losses,
            resends,
            home: OnceLock::new(),
        })
    }

    /// The pool a shared connection was opened for, while it exists.
    pub(super) fn home(&self) -> Option<RedisPool> {
        self.home.get()?.upgrade()
    }

    /// Records `pool` as the one this shared connection was opened for.
    pub(super) fn set_home(&self, pool: &RedisPool) {
        let _ = self.home.set(pool.downgrade());
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
            || match &self.watch {
                Watch::Node => false,
                Watch::Master {
                    generation,
                    current,
                } => current.load(Ordering::Acquire) != *generation,
                Watch::Cluster { generation, nodes } => nodes.generation() != *generation,
            }
    }

    /// Marks the connection broken when a request failed at the connection level, or
    /// timed out (a hung server: the next checkout opens a fresh connection instead,
    /// which is what tells the health engine the server is gone), or, on a sentinel's
    /// master, was refused as `READONLY` (the server is a replica now).
    pub(super) fn observe<T>(&self, r: &RedisResult<T>) {
        let Err(e) = r else { return };
        let broken = match self.watch {
            Watch::Cluster { ref nodes, .. } => e.is_timeout() && !nodes.master_silent(),
            Watch::Node => connection_failed(e),
            Watch::Master { .. } => {
                connection_failed(e)
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                    )
            }
        };
        if broken {
            self.broken.store(true, Ordering::Relaxed);
            if e.is_timeout() {
                self.losses.connection_lost();
            }
        }
    }
}

/// A response timeout that never comes: the crate takes a duration, not "none".
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_timeout() || (e.is_unrecoverable_error() && e.is_io_error())
}

/// A pooled Redis connection, used by one task at a time: the redis crate's connection
/// (a `MultiplexedConnection` to one server, or a `ClusterConnection`), plus whether it
/// broke (the pool then drops it).
///
/// It implements [`redis::aio::ConnectionLike`], so `redis::cmd(..).query_async(&mut *conn)`
/// and [`redis::AsyncCommands`] work on a checkout. It speaks RESP3. For pub/sub and other
/// push-based use, take a connection of the redis crate's own (`redis::Client::
/// get_async_pubsub`).
pub struct RedisConnection {
    pub(super) inner: Link,
    pub(super) meta: Arc<ConnMeta>,
}

/// A connection shared by many tasks at once: what
/// [`RedisPool::multiplexed`](crate::RedisPool::multiplexed) hands out. Cloning shares the
/// socket(s), as the redis crate's connections do.
///
/// It implements [`redis::aio::ConnectionLike`], so [`redis::AsyncCommands`] work on it.
#[derive(Clone)]
pub struct SharedRedisConnection {
    pub(super) inner: Link,
    pub(super) meta: Arc<ConnMeta>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("cluster", &self.cluster().is_some())
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SharedRedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedisConnection")
            .field("cluster", &self.cluster().is_some())
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// True once the server closed the connection, a request on it failed at the
    /// connection level or timed out, a request was cancelled before its reply came, or
    /// (Sentinel) its server stopped being the master; it is dropped when it goes back to
    /// the pool.
    pub fn is_broken(&self) -> bool {
        self.meta.is_broken()
    }

    /// The redis multiplexed connection underneath, for a single server or a sentinel's
    /// master; `None` for a cluster.
    pub fn multiplexed(&self) -> Option<&MultiplexedConnection> {
        self.inner.node()
    }

    /// The redis cluster connection underneath, for a cluster; `None` otherwise.
    pub fn cluster(&self) -> Option<&ClusterConnection> {
        self.inner.cluster()
    }
}

impl SharedRedisConnection {
    /// True once the connection broke; the pool then opens a new one for later callers.
    pub fn is_broken(&self) -> bool {
        self.meta.is_broken()
    }

    pub(super) fn is_usable(&self) -> bool {
        !self.is_broken()
    }

    /// The redis multiplexed connection underneath (single server or sentinel's master);
    /// `None` for a cluster. Clones of it are not tracked by the pool.
    pub fn multiplexed(&self) -> Option<&MultiplexedConnection> {
        self.inner.node()
    }

    /// The redis cluster connection underneath, for a cluster; `None` otherwise.
    pub fn cluster(&self) -> Option<&ClusterConnection> {
        self.inner.cluster()
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

impl RedisConnection {
    /// Sends `cmd` once: a blocking command with its own timeout fitted to it; the
    /// connection is marked broken if it failed under it, or if this is dropped before
    /// the reply came.
    pub(super) async fn send_once(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let mut unfinished = Unfinished::new(&self.meta);
        let usual = self.meta.command_timeout;
        let r = match route::classify(cmd).1 {
            Block::No => self.inner.send(cmd).await,
            block => {
                let limit = block.limit(usual);
                self.inner.send_blocking(cmd, limit, usual).await
            }
        };
        unfinished.done = true;
        self.meta.observe(&r);
        r
    }

    /// Sends a pipeline once, as [`send_once`](RedisConnection::send_once) does a command.
    pub(super) async fn send_pipeline_once(
        &mut self,
        cmd: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut unfinished = Unfinished::new(&self.meta);
        let r = self.inner.send_pipeline(cmd, offset, count).await;
        unfinished.done = true;
        self.meta.observe(&r);
        r
    }
}

/// On a Redis Cluster, a read given up on a node that stopped answering is sent again
/// on the same connection, whose reads keep away from that node by then (up to
/// `command_retries` times, counted in `retried_commands`).
impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            // One await in a loop: the request's future is held once in this one.
            let mut tries = 0;
            loop {
                let r = self.send_once(cmd).await;
                match &r {
                    Err(e) if self.meta.resends.again_on_held(e, &mut tries) => {}
                    _ => return r,
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut tries = 0;
            loop {
                let r = self.send_pipeline_once(cmd, offset, count).await;
                match &r {
                    Err(e) if self.meta.resends.again_on_held(e, &mut tries) => {}
                    _ => return r,
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db()
    }
}
