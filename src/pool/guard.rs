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
    /// The connection, and with it the caller's turn (given back on drop, through the
    /// pool's life the connection holds).
    conn: bb8::PooledConnection<'static, Tracked<M>>,
    /// Its entry in the leak registry, while leak detection is on.
    _leak: Option<Ticket>,
    /// Gives the turn back after the connection is back in the pool, when a caller waits
    /// in line for it (declared after `conn`, so dropped after it).
    then: TurnBack,
    /// When it was checked out, and where to record for how long.
    #[cfg(feature = "metrics")]
    used: (tokio::time::Instant, metrics::Histogram),
}

impl<M: Bb8Manager> PooledConnection<M> {
    #[cfg(not(feature = "metrics"))]
    pub(crate) fn new(
        conn: bb8::PooledConnection<'static, Tracked<M>>,
        turn: Turn<'_>,
        leak: Option<Ticket>,
    ) -> Self {
        turn.hand_over();
        PooledConnection {
            conn,
            _leak: leak,
            then: TurnBack(None),
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) fn new(
        conn: bb8::PooledConnection<'static, Tracked<M>>,
        turn: Turn<'_>,
        leak: Option<Ticket>,
        use_time: metrics::Histogram,
    ) -> Self {
        turn.hand_over();
        PooledConnection {
            conn,
            _leak: leak,
            then: TurnBack(None),
            used: (tokio::time::Instant::now(), use_time),
        }
    }

    /// Drops the connection when it is returned instead of pooling it again (for a
    /// connection left in a state the next user must not see).
    pub fn retire(&mut self) {
        self.conn.retire();
    }
}

impl<M: Bb8Manager> Drop for PooledConnection<M> {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.used.1.record(self.used.0.elapsed().as_secs_f64());
        let life = self.conn.life();
        if life.turns.in_line() {
            // The connection goes back first, so the caller the turn lets in finds it idle
            // (and bb8 does not open another one for it, at a server's connection cap).
            self.then = TurnBack(Some(life.clone()));
        } else {
            // Nobody to hand it to: the turn goes back now, reached through the
            // connection, with no reference count of its own.
            life.turns.give_back();
        }
    }
}

/// Gives a turn back to the pool whose life it holds, when dropped.
struct TurnBack(Option<std::sync::Arc<crate::health::Life>>);

impl Drop for TurnBack {
    fn drop(&mut self) {
        if let Some(life) = &self.0 {
            life.turns.give_back();
        }
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
