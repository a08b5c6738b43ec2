//! [`ConnMeta`]: what a pooled Redis connection knows about itself, shared by the clones
//! of a shared one: whether it broke, how it is judged broken ([`Watch`]), its command
//! timeout, and the pool a shared connection was opened for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::RedisResult;

use super::nodes::ClusterNodes;
use super::resends::Resends;
use super::{RedisConnectionManager, RedisPool};
use crate::health::LossSignal;
use crate::pool::WeakPool;

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
    pub(super) resends: Arc<Resends>,
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

fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_timeout() || (e.is_unrecoverable_error() && e.is_io_error())
}
