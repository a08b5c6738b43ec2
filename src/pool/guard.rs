//! [`PooledConnection`]: connhub's checkout guard.

use std::ops::{Deref, DerefMut};

use super::backend::Bb8Manager;
use super::leak::Ticket;
use super::tracked::Tracked;
use crate::health::Turn;

/// A checked-out connection: derefs to the backend's connection and goes back to the pool
/// when dropped. It owns its reference to the pool, so it can outlive the handle it came
/// from and move into spawned tasks.
pub struct PooledConnection<M: Bb8Manager> {
    // Field order is drop order: the connection goes back to bb8 before the next waiter
    // in line is let in, so that waiter finds it idle.
    conn: bb8::PooledConnection<'static, Tracked<M>>,
    _turn: Turn,
    /// Its entry in the leak registry, while leak detection is on.
    _leak: Option<Ticket>,
    /// When it was checked out, and where to record for how long.
    #[cfg(feature = "metrics")]
    used: (tokio::time::Instant, metrics::Histogram),
}

impl<M: Bb8Manager> PooledConnection<M> {
    #[cfg(not(feature = "metrics"))]
    pub(crate) fn new(
        conn: bb8::PooledConnection<'static, Tracked<M>>,
        turn: Turn,
        leak: Option<Ticket>,
    ) -> Self {
        PooledConnection {
            conn,
            _turn: turn,
            _leak: leak,
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn new(
        conn: bb8::PooledConnection<'static, Tracked<M>>,
        turn: Turn,
        leak: Option<Ticket>,
        use_time: metrics::Histogram,
    ) -> Self {
        PooledConnection {
            conn,
            _turn: turn,
            _leak: leak,
            used: (tokio::time::Instant::now(), use_time),
        }
    }

    /// Drops the connection when it is returned instead of pooling it again (for a
    /// connection left in a state the next user must not see).
    pub fn retire(&mut self) {
        self.conn.retire();
    }
}

#[cfg(feature = "metrics")]
impl<M: Bb8Manager> Drop for PooledConnection<M> {
    fn drop(&mut self) {
        self.used.1.record(self.used.0.elapsed().as_secs_f64());
    }
}

impl<M> std::fmt::Debug for PooledConnection<M>
where
    M: Bb8Manager,
    M::Connection: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PooledConnection").field(&**self).finish()
    }
}

impl<M: Bb8Manager> Deref for PooledConnection<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.conn
    }
}

impl<M: Bb8Manager> DerefMut for PooledConnection<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.conn
    }
}
