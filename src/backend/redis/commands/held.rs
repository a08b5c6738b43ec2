//! A [`SharedRedisConnection`] a caller keeps (what `multiplexed()` hands out) follows
//! its connection's replacement. Once that connection broke (lost; on Sentinel, its server
//! no longer the master; on a cluster, slots moved), the handle's next command goes on the
//! pool's current shared connection, and the handle keeps that one: a handle stored once
//! for the life of a service does not fail for good after one lost connection, as the
//! redis crate's own `MultiplexedConnection` does. A command that meets a lost connection,
//! or a Redis Cluster read given up on a silent replica, follows the pool's retry rule
//! (`retry.rs`).

use futures_util::TryFutureExt;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::retry::{Via, settled};
use super::{Reply, Sent, unavailable};
use crate::backend::redis::SharedRedisConnection;

impl SharedRedisConnection {
    /// Moves this handle on to the pool's current shared connection (opening one if
    /// needed) if its own broke; fails fast like `multiplexed()` while the connector is
    /// down. Left as it is once the pool is gone: a command on it then fails as it would.
    async fn follow(&mut self) -> RedisResult<()> {
        if let Some(pool) = self.meta.home() {
            *self = pool.multiplexed().await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// `sent` failed with `e` on this handle's connection: where the pool's retry rule
    /// says it ends (sent again on the pool's next shared connection when that is safe).
    async fn failed(&self, sent: Sent<'_>, e: RedisError) -> RedisResult<Reply> {
        match self.meta.home() {
            Some(pool) => settled(&pool, sent, false, Via::Shared, e).await,
            None => Err(e),
        }
    }

    /// Sends `sent` on this handle's connection, or on its replacement. The crate's
    /// request future is held inline: this one is boxed once per command.
    async fn send(&mut self, sent: Sent<'_>) -> RedisResult<Reply> {
        if self.meta.is_broken() {
            Box::pin(self.follow()).await?;
        }
        let r = match sent {
            Sent::Command(cmd) => self.inner.send(cmd).await.map(Reply::One),
            Sent::Pipeline(pipe, offset, count) => self
                .inner
                .send_pipeline(pipe, offset, count)
                .await
                .map(Reply::Many),
        };
        self.meta.observe(&r);
        match r {
            // Boxed: a retry's future stays out of every command's.
            Err(e) => Box::pin(self.failed(sent, e)).await,
            ok => ok,
        }
    }
}

/// Shared by many tasks, so a cancelled request does not retire the connection (the
/// multiplexed connection drops its late reply); blocking commands do not belong here.
impl ConnectionLike for SharedRedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.send(Sent::Command(cmd)).map_ok(Reply::one))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.send(Sent::Pipeline(pipe, offset, count))
                .map_ok(Reply::many),
        )
    }

    fn get_db(&self) -> i64 {
        self.inner.db()
    }
}
