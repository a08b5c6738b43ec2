//! A connection opened for one caller, outside the pool's count: what a command that
//! lost its pooled connection is sent again on. Another idle connection may have been
//! lost to the same failure (a proxy restart, `CLIENT KILL`), so the retry gets one made
//! now. When the caller is done it joins the pool if there is room, as a connection the
//! health engine proved does.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;

use super::{Bb8Manager, Fault, Inner, Pool, Tracked, tracked::Stamped};
use crate::error::{Error, Result, TimeoutKind};

/// A connection opened for one caller; it joins the pool when dropped, if the pool has
/// room and the connection is not broken.
pub(crate) struct Dedicated<M: Bb8Manager> {
    conn: Option<Stamped<M::Connection>>,
    pool: Pool<M>,
}

impl<M: Bb8Manager> Pool<M> {
    /// A connection opened now, bounded by `connect_timeout`: refused at once while the
    /// connector is down or closed, and failing as a checkout would (the server's refusal
    /// at a connection cap, a failed `on_connect` hook).
    pub(crate) async fn dedicated(&self) -> Result<Dedicated<M>> {
        let pool = self.current();
        pool.admit()?;
        let mut conn = pool.inner.open_dedicated().await?;
        if let Some(e) = conn.take_hook_failure() {
            return Err(e);
        }
        Ok(Dedicated {
            conn: Some(conn),
            pool: pool.clone(),
        })
    }
}

impl<M: Bb8Manager> Inner<M> {
    /// A connection opened outside the pool's count, bounded by `connect_timeout`, its
    /// failure as connhub's error.
    pub(super) async fn open_dedicated(&self) -> Result<Stamped<M::Connection>> {
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        match tokio::time::timeout(limit, self.dial()).await {
            Ok(opened) => opened.map_err(|f| self.open_failed(f)),
            Err(_) => Err(h.timeout(TimeoutKind::Connect, limit)),
        }
    }

    /// Opens a connection now, past the limit a connection cap set (bb8's own requests
    /// stop there): a trial, a growth step, or a connection for one caller.
    pub(super) async fn dial(
        &self,
    ) -> std::result::Result<Stamped<M::Connection>, Fault<M::Error>> {
        let tracked = Tracked {
            parts: self.parts.clone(),
        };
        tracked.dial().await
    }

    /// Why a connection opened outside the pool's count failed, as connhub's error.
    pub(super) fn open_failed(&self, fault: Fault<M::Error>) -> Error {
        match fault {
            Fault::Connect(e) | Fault::Invalid(e) => {
                self.parts.backend.classify(&self.health.name, e)
            }
            Fault::Retired => self.health.closed(),
        }
    }

    /// Gives `conn` to the pool if it has room and `conn` is not broken; drops it
    /// otherwise.
    pub(super) fn adopt(&self, conn: Stamped<M::Connection>) {
        if self.bb8.add(conn).is_ok() {
            // bb8 counts only the connections it opens itself.
            self.added.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<M: Bb8Manager> Deref for Dedicated<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        // Proven invariant: `conn` is `Some` until `drop`.
        self.conn
            .as_deref()
            .expect("a dedicated connection until dropped")
    }
}

impl<M: Bb8Manager> DerefMut for Dedicated<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        self.conn
            .as_deref_mut()
            .expect("a dedicated connection until dropped")
    }
}

impl<M: Bb8Manager> Drop for Dedicated<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.inner.adopt(conn);
        }
    }
}
