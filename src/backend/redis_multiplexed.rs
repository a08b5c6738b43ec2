//! [`RedisPool::multiplexed`]: shared connections for stateless commands, without an
//! exclusive checkout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use super::redis::{RedisConnection, RedisPool};
use crate::error::Result;
use crate::pool::PoolExt;

/// A few shared connections, handed out round robin; each is opened on first use and
/// replaced once it breaks or predates an outage.
pub(crate) struct Multiplexed {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

struct Slot {
    conn: RwLock<Option<RedisConnection>>,
    /// One task at a time opens a slot's connection; the others wait for it.
    opening: tokio::sync::Mutex<()>,
}

impl Multiplexed {
    pub(crate) fn new(n: u32) -> Self {
        let n = usize::try_from(n.max(1)).unwrap_or(1);
        Multiplexed {
            slots: (0..n)
                .map(|_| Slot {
                    conn: RwLock::new(None),
                    opening: tokio::sync::Mutex::new(()),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Slot {
    fn usable(&self) -> Option<RedisConnection> {
        let guard = self.conn.read().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().filter(|c| c.is_usable()).cloned()
    }

    fn set(&self, conn: Option<RedisConnection>) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
    }
}

impl PoolExt for Multiplexed {
    fn on_close(&self) {
        for slot in &self.slots {
            slot.set(None);
        }
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
    /// SUBSCRIBE, SELECT, CLIENT SETNAME — on a shared socket they would block or leak into
    /// every other user.
    ///
    /// It fails fast like `get()` while the connector is down. The connections are
    /// separate from the pool's (`multiplexed_connections` of them, default 2), opened on
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
        self.admit()?;
        let Some(m) = self.ext::<Multiplexed>() else {
            // Every RedisPool is built with its slots; a dedicated connection is the
            // correct, if slower, answer should one ever lack them.
            return self.dedicated().await;
        };
        let i = m.next.fetch_add(1, Ordering::Relaxed) % m.slots.len();
        let slot = &m.slots[i];
        if let Some(conn) = slot.usable() {
            return Ok(conn);
        }
        let _opening = slot.opening.lock().await;
        if let Some(conn) = slot.usable() {
            return Ok(conn);
        }
        self.admit()?;
        let conn = self.dedicated().await?;
        slot.set(Some(conn.clone()));
        Ok(conn)
    }
}
