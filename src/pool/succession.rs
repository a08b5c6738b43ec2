//! Reload succession: a pool replaced by a reload points at its successor, so handles
//! kept from before check out from the new pool, and long-lived streams move on to it.

use std::sync::Weak;

use super::{Bb8Manager, Inner, Pool};
use crate::error::{Error, Result};

/// A pool, seen from something it owns: a connection it handed out that finds its way
/// back to the pool (and on to the pool that replaced it) without keeping it alive.
pub(crate) struct WeakPool<M: Bb8Manager>(Weak<Inner<M>>);

impl<M: Bb8Manager> WeakPool<M> {
    /// The pool, while it exists.
    pub(crate) fn upgrade(&self) -> Option<Pool<M>> {
        self.0.upgrade().map(|inner| Pool { inner })
    }
}

impl<M: Bb8Manager> std::fmt::Debug for WeakPool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakPool")
    }
}

impl<M: Bb8Manager> Pool<M> {
    /// This pool, not kept alive by the handle.
    pub(crate) fn downgrade(&self) -> WeakPool<M> {
        WeakPool(std::sync::Arc::downgrade(&self.inner))
    }

    /// The pool that replaced this one, when `e` says this one is closed because a
    /// reload replaced it (between the caller's look and its checkout); else `e`.
    pub(super) fn replaced_or(&self, e: Error) -> Result<&Pool<M>> {
        match e {
            Error::Closed { .. } => self.newer().ok_or(e),
            e => Err(e),
        }
    }

    /// This pool, or the one that replaced it on a reload (the newest).
    pub(crate) fn current(&self) -> &Pool<M> {
        let mut pool = self;
        while let Some(next) = pool.inner.successor.get() {
            pool = next;
        }
        pool
    }

    /// The pool that replaced this one on a reload (the newest), if any.
    pub(crate) fn newer(&self) -> Option<&Pool<M>> {
        self.inner.successor.get().map(|_| self.current())
    }

    /// Makes `next` the pool this one's handles use from now on (a reload replaced it).
    pub(crate) fn replaced_by(&self, next: &Pool<M>) {
        self.inner.health.mark_replaced();
        let _ = self.inner.successor.set(next.clone());
    }

    /// Completes when this pool is closed, with the pool that replaced it on a reload if
    /// one did: a long-lived stream moves on to that one, and ends otherwise.
    pub(crate) async fn closed_or_replaced(&self) -> Option<Pool<M>> {
        self.closed().await;
        self.newer().cloned()
    }
}
