//! A few connections shared by every caller, outside the pool's exclusive checkouts:
//! what [`RedisPool::multiplexed`](crate::RedisPool::multiplexed) and
//! [`EtcdPool::client`](crate::EtcdPool::client) hand out clones of. A backend keeps them
//! and clears them when its connections are retired ([`Backend::retire`](crate::Backend::retire)).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

use crate::error::Result;
use crate::pool::{Bb8Manager, Pool};

/// Shared connections, handed out round robin; each is opened on first use and replaced
/// once `usable` says no (broken) or the connector retires them (an outage).
pub(crate) struct Shared<C> {
    slots: Vec<Slot<C>>,
    next: AtomicUsize,
    usable: fn(&C) -> bool,
}

struct Slot<C> {
    conn: ArcSwapOption<C>,
    /// One task at a time opens a slot's connection; the others wait for it.
    opening: tokio::sync::Mutex<()>,
}

impl<C: Send + Sync + 'static> Shared<C> {
    pub(crate) fn new(n: u32, usable: fn(&C) -> bool) -> Self {
        let n = usize::try_from(n.max(1)).unwrap_or(1);
        Shared {
            slots: (0..n)
                .map(|_| Slot {
                    conn: ArcSwapOption::empty(),
                    opening: tokio::sync::Mutex::new(()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            usable,
        }
    }

    fn current<R>(&self, slot: &Slot<C>, take: &impl Fn(&C) -> R) -> Option<R> {
        // A lock-free load that bumps no shared counter: every caller of every task reads
        // this, so a lock word or refcount here would bounce between cores.
        let guard = slot.conn.load();
        guard.as_deref().filter(|c| (self.usable)(c)).map(take)
    }

    fn set(slot: &Slot<C>, conn: Option<C>) {
        slot.conn.store(conn.map(Arc::new));
    }

    /// What `take` makes of the next shared connection (a clone of it, or of the client
    /// inside), opening it with `open` first if needed. Fails fast like a checkout while
    /// the connector is down or closed.
    ///
    /// While the connection is open this is a few loads and a clone; opening it is boxed,
    /// so the future callers hold (and put in their own futures) stays small.
    pub(crate) async fn get<M, R, F>(
        &self,
        pool: &Pool<M>,
        open: impl FnOnce() -> F,
        take: impl Fn(&C) -> R,
    ) -> Result<R>
    where
        M: Bb8Manager,
        F: Future<Output = Result<C>>,
    {
        pool.admit_or_yield().await?;
        let slot = match self.slots.as_slice() {
            // One slot (the default): no shared counter to bump on every call.
            [only] => only,
            slots => &slots[self.next.fetch_add(1, Ordering::Relaxed) % slots.len()],
        };
        if let Some(r) = self.current(slot, &take) {
            return Ok(r);
        }
        Box::pin(self.open_slot(pool, slot, open, &take)).await
    }

    /// Opens `slot`'s connection, unless another task did while this one waited.
    async fn open_slot<M, R, F>(
        &self,
        pool: &Pool<M>,
        slot: &Slot<C>,
        open: impl FnOnce() -> F,
        take: &impl Fn(&C) -> R,
    ) -> Result<R>
    where
        M: Bb8Manager,
        F: Future<Output = Result<C>>,
    {
        let _opening = slot.opening.lock().await;
        if let Some(r) = self.current(slot, take) {
            return Ok(r);
        }
        pool.admit()?;
        let conn = open().await?;
        let r = take(&conn);
        Self::set(slot, Some(conn));
        Ok(r)
    }
}

impl<C> Shared<C> {
    /// Drops every shared connection; the next caller opens a fresh one.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.conn.store(None);
        }
    }
}

impl<C> std::fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("slots", &self.slots.len())
            .finish()
    }
}
