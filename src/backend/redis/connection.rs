//! The connections a Redis pool hands out: [`RedisConnection`] (one checkout) and
//! [`SharedRedisConnection`] (what `multiplexed()` hands out), each the redis crate's own
//! connection (a node's `MultiplexedConnection`, or a `ClusterConnection`) plus what the
//! pool needs to know of it: whether it broke.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::errors::on_held;
use super::link::Link;
use super::meta::ConnMeta;
use super::route::{self, Block};

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
                match self.send_once(cmd).await {
                    Err(e) if self.meta.resends.again_on_held(&e, &mut tries) => {}
                    r => return r.map_err(on_held),
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
                match self.send_pipeline_once(cmd, offset, count).await {
                    Err(e) if self.meta.resends.again_on_held(&e, &mut tries) => {}
                    r => return r.map_err(on_held),
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db()
    }
}
