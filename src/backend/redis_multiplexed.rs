//! [`RedisPool::multiplexed`]: shared connections for stateless commands, without an
//! exclusive checkout.

use super::redis::{RedisConnection, RedisPool};
use crate::error::Result;
use crate::shared::Shared;

impl RedisPool {
    /// A shared connection for commands that keep no connection state, with no exclusive
    /// checkout: many tasks send on the same socket at once and redis pipelines their
    /// requests, which is the fastest way to run many small commands.
    ///
    /// Use it for GET, SET, INCR, EXPIRE, EVALSHA, pipelines (non-transactional) and the
    /// like. Use [`get`](crate::Pool::get) instead for anything that changes or relies on
    /// the connection's state: blocking commands (BLPOP, XREAD BLOCK), WATCH/MULTI/EXEC,
    /// SUBSCRIBE, SELECT, CLIENT SETNAME — on a shared socket they would block or leak into
    /// every other user.
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
    pub async fn multiplexed(&self) -> Result<RedisConnection> {
        match self.ext::<Shared<RedisConnection>>() {
            Some(shared) => shared.get(self, RedisConnection::clone).await,
            // Every RedisPool the Manager builds has them; a dedicated connection is the
            // correct, if slower, answer otherwise.
            None => {
                self.admit()?;
                self.dedicated().await
            }
        }
    }
}
