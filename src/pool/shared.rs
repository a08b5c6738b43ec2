//! A few connections shared by every caller, outside the pool's exclusive checkouts:
//! what [`RedisPool::multiplexed`](crate::RedisPool::multiplexed) and
//! [`EtcdPool::client`](crate::EtcdPool::client) hand out clones of (and, for etcd, what
//! every checkout is a clone of). A backend keeps them and clears them when its
//! connections are retired ([`Backend::retire`](crate::backend::Backend::retire)).
//!
//! Opening one is single-flight, and holds no lock while it runs: the first caller to find
//! a slot empty starts the open as a shared future, every caller that comes meanwhile
//! awaits the same future, and the slot is filled from its outcome (reconnect as data, as
//! the redis crate's `ConnectionManager` does it).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use futures_util::FutureExt;
use futures_util::future::Shared as SharedFuture;

use crate::connector::BoxFuture;
use crate::error::Result;
use crate::pool::{Bb8Manager, Pool};
use crate::sync::lock;

/// An open in flight, awaited by every caller that found its slot empty.
type Opening<C> = SharedFuture<BoxFuture<'static, Result<C>>>;

/// Shared connections, handed out round robin; each is opened on first use and replaced
/// once `usable` says no (broken) or the connector retires them (an outage).
pub(crate) struct Shared<C> {
    slots: Vec<Slot<C>>,
    next: AtomicUsize,
    usable: fn(&C) -> bool,
}

struct Slot<C> {
    conn: ArcSwapOption<C>,
    /// The open in flight, if any; the lock is held only to look at it or set it.
    opening: Mutex<Option<Opening<C>>>,
}

impl<C: Clone + Send + Sync + 'static> Shared<C> {
    pub(crate) fn new(n: u32, usable: fn(&C) -> bool) -> Self {
        let n = usize::try_from(n.max(1)).unwrap_or(1);
        Shared {
            slots: (0..n)
                .map(|_| Slot {
                    conn: ArcSwapOption::empty(),
                    opening: Mutex::new(None),
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

    fn slot(&self) -> &Slot<C> {
        match self.slots.as_slice() {
            // One slot (the default): no shared counter to bump on every call.
            [only] => only,
            slots => &slots[self.next.fetch_add(1, Ordering::Relaxed) % slots.len()],
        }
    }

    /// What `take` makes of the next shared connection (a clone of it, or of the client
    /// inside), opening it with `open` first if needed. Fails fast like a checkout while
    /// the connector is down or closed.
    ///
    /// While the connection is open this is a few loads and a clone; opening it is boxed,
    /// so the future callers hold (and put in their own futures) stays small. `open` is
    /// called only when an open starts, so it may clone what its future needs there.
    pub(crate) async fn get<M, R, F>(
        &self,
        pool: &Pool<M>,
        open: impl FnOnce() -> F,
        take: impl Fn(&C) -> R,
    ) -> Result<R>
    where
        M: Bb8Manager,
        F: Future<Output = Result<C>> + Send + 'static,
    {
        pool.admit_or_yield().await?;
        let slot = self.slot();
        if let Some(r) = self.current(slot, &take) {
            return Ok(r);
        }
        Box::pin(self.open_slot(&|| pool.admit(), slot, open, &take)).await
    }

    /// What `take` makes of the next shared connection, if one is open and the pool admits
    /// callers now: [`get`](Shared::get) without an await, for callers that keep their
    /// own future small and box `get` for when this says `None`.
    #[inline]
    pub(crate) fn now<M: Bb8Manager, R>(
        &self,
        pool: &Pool<M>,
        take: impl Fn(&C) -> R,
    ) -> Option<R> {
        if !pool.admits() {
            return None;
        }
        self.current(self.slot(), &take)
    }

    /// Calls `f` on each shared connection open now.
    pub(crate) fn each(&self, f: impl Fn(&C)) {
        for slot in &self.slots {
            if let Some(c) = slot.conn.load().as_deref() {
                f(c);
            }
        }
    }

    /// [`get`](Shared::get) with no admission: for a backend's own connect, whose caller
    /// (bb8) reports failures to the health engine itself.
    pub(crate) async fn get_or_open<R, F>(
        &self,
        open: impl FnOnce() -> F,
        take: impl Fn(&C) -> R,
    ) -> Result<R>
    where
        F: Future<Output = Result<C>> + Send + 'static,
    {
        let slot = self.slot();
        if let Some(r) = self.current(slot, &take) {
            return Ok(r);
        }
        Box::pin(self.open_slot(&|| Ok(()), slot, open, &take)).await
    }

    /// Opens `slot`'s connection, or awaits the open another caller started.
    /// `admit` refuses to start one while the connector is down or closed.
    async fn open_slot<R, F>(
        &self,
        admit: &(dyn Fn() -> Result<()> + Sync),
        slot: &Slot<C>,
        open: impl FnOnce() -> F,
        take: &impl Fn(&C) -> R,
    ) -> Result<R>
    where
        F: Future<Output = Result<C>> + Send + 'static,
    {
        let opening = {
            let mut opening = lock(&slot.opening);
            if let Some(r) = self.current(slot, take) {
                return Ok(r);
            }
            match &*opening {
                Some(started) => started.clone(),
                None => {
                    admit()?;
                    let started = open().boxed().shared();
                    *opening = Some(started.clone());
                    started
                }
            }
        };
        let opened = opening.clone().await;
        {
            let mut current = lock(&slot.opening);
            if current.as_ref().is_some_and(|o| o.ptr_eq(&opening)) {
                // Filled (or failed) under the same lock a new open would start under.
                if let Ok(conn) = &opened {
                    slot.conn.store(Some(Arc::new(conn.clone())));
                }
                *current = None;
            }
        }
        opened.map(|conn| take(&conn))
    }
}

impl<C> Shared<C> {
    /// Drops every shared connection; the next caller opens a fresh one. An open in
    /// flight still answers its callers, but does not fill its slot.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            *lock(&slot.opening) = None;
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
