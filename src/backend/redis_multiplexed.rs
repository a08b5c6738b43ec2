//! [`RedisPool::multiplexed`]: shared connections for stateless commands, without an
//! exclusive checkout.

use super::redis::{RedisConnectionManager, RedisPool, SharedRedisConnection};
use crate::error::Result;
use crate::pool::PoolExt;
use crate::shared::Shared;

/// What a Redis pool keeps besides bb8's connections: the shared connections and what
/// opens them.
pub(crate) struct SharedRedis {
    shared: Shared<SharedRedisConnection>,
    manager: RedisConnectionManager,
}

impl SharedRedis {
    pub(crate) fn new(n: u32, manager: RedisConnectionManager) -> Self {
        SharedRedis {
            shared: Shared::new(n, SharedRedisConnection::is_usable),
            manager,
        }
    }
}

impl PoolExt for SharedRedis {
    fn on_close(&self) {
        self.shared.on_close();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
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
    /// first use and replaced when they break or predate an outage.
    ///
    /// ```no_run
    /// # async fn demo(pool: connhub::RedisPool) -> Result<(), Box<dyn std::error::Error>> {
    /// use connhub::redis::AsyncCommands;
    /// let mut conn = pool.multiplexed().await?;
    /// let hits: i64 = conn.incr("hits", 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn multiplexed(&self) -> Result<SharedRedisConnection> {
        match self.ext::<SharedRedis>() {
            Some(ext) => {
                let open = || async {
                    ext.manager
                        .connect_shared()
                        .await
                        .map_err(|e| self.connect_failed(e))
                };
                ext.shared
                    .get(self, open, SharedRedisConnection::clone)
                    .await
            }
            // Every RedisPool the Manager builds has them; this is one built otherwise.
            None => Err(crate::error::Error::NotFound {
                name: format!("{} (multiplexed connections)", self.name()),
            }),
        }
    }
}
