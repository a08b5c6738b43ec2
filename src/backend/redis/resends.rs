//! [`Resends`]: commands a Redis connector sent again because that was safe (their
//! connection was lost under them, or a Redis Cluster read was given up on a node that
//! stopped answering): how many times one may be (`command_retries`), and the count that
//! [`Status::retried_commands`](crate::Status::retried_commands) and the
//! `connhub.commands.retried` counter report. One per connector, shared by the pool
//! itself as a connection and by every connection it hands out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::RedisError;

#[derive(Debug)]
pub(super) struct Resends {
    /// The connector's name, for the metric and the log line.
    name: Arc<str>,
    /// How many times one command may be sent again.
    limit: u32,
    /// Commands sent again so far.
    count: AtomicU64,
}

impl Resends {
    pub(super) fn new(name: Arc<str>, limit: u32) -> Self {
        Resends {
            name,
            limit,
            count: AtomicU64::new(0),
        }
    }

    /// How many times one command may be sent again (`command_retries`).
    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    /// Commands sent again so far.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts a command about to be sent again after it failed with `e`: in status, in
    /// the metric, and in a debug line.
    pub(super) fn counted(&self, e: &RedisError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "connhub.commands.retried",
            "db.client.connection.pool.name" => self.name.to_string()
        )
        .increment(1);
        tracing::debug!(connector = %self.name, kind = "redis", error = %e, "a command that is safe to send again failed on its way (a lost connection, a silent replica); retrying");
    }

    /// True when a command that failed with `e` on a checkout a caller holds is sent
    /// again on it, `tries` times so far: a Redis Cluster read given up on a node that
    /// stopped answering (the connection's reads keep away from that node by then), up to
    /// `command_retries` times. Counted when true.
    pub(super) fn again_on_held(&self, e: &RedisError, tries: &mut u32) -> bool {
        if *tries >= self.limit || !super::nodes::is_read_given_up(e) {
            return false;
        }
        *tries += 1;
        self.counted(e);
        true
    }
}
