//! [`Link`]: the redis crate's connection under a pooled one (a node's
//! `MultiplexedConnection`, or a `ClusterConnection` with the node monitor that bounds
//! what it waits on), and how a command is sent on it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::nodes::ClusterNodes;

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
    pub(super) async fn send_blocking(
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

    pub(super) fn node(&self) -> Option<&MultiplexedConnection> {
        match self {
            Link::Node(c) => Some(c),
            Link::Cluster(..) => None,
        }
    }

    pub(super) fn cluster(&self) -> Option<&ClusterConnection> {
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

/// A response timeout that never comes: the crate takes a duration, not "none".
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
