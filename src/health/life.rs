//! [`Life`]: what every connection of a pool is checked against without a round trip (the
//! epoch it was made in, whether the pool is closed), the count of connections that exist,
//! and the pool's turns; [`Live`] counts one connection in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::turns::Turns;

/// What every connection of a pool is checked against, locally: the epoch it was made in
/// and whether the pool is closed. Going down or closing starts a new epoch, so no
/// connection made before is handed out again.
#[derive(Debug)]
pub(crate) struct Life {
    epoch: AtomicU32,
    closed: AtomicBool,
    /// Connections of the pool that exist now ([`Live`] counts them).
    live: AtomicU32,
    /// Connections being opened now ([`Opening`] counts them).
    opening: AtomicU32,
    /// When the pool last dialed past a connection cap's limit ([`Life::now_ms`]).
    past_limit_at: AtomicU32,
    /// Told when the last connection goes ([`Life::none_live`]).
    emptied: Notify,
    /// The start of the pool's clock ([`Life::now_ms`]).
    born: Instant,
    /// How many callers may hold a connection at once. Here, where every connection can
    /// reach it, so a checked-out connection gives its turn back through the reference
    /// to the pool's life it already holds.
    pub(crate) turns: Turns,
}

/// The stamp of a connection retired by hand ([`Life::is_current`] never matches it).
pub(crate) const RETIRED: u32 = u32::MAX;

/// Counts one connection in [`Life`] while it exists.
#[derive(Debug)]
pub(crate) struct Live(Arc<Life>);

impl Live {
    pub(crate) fn new(life: &Arc<Life>) -> Self {
        life.live.fetch_add(1, Ordering::Relaxed);
        Live(life.clone())
    }

    /// The life of the pool the connection belongs to.
    #[inline]
    pub(crate) fn life(&self) -> &Arc<Life> {
        &self.0
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // The counter's last: whoever waits for none to be left hears it (the
        // notification orders this decrement before its look at the count).
        if self.0.live.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.emptied.notify_waiters();
        }
    }
}

/// Counts one connection in [`Life`] while it is being opened. Dropped once it is made
/// (after its [`Live`] counts it) or failed (before its failure is reported), so a failure
/// never counts itself, and a connection is never out of both counts on its way in.
#[derive(Debug)]
pub(crate) struct Opening<'a>(&'a Life);

impl<'a> Opening<'a> {
    pub(crate) fn new(life: &'a Life) -> Self {
        life.opening.fetch_add(1, Ordering::AcqRel);
        Opening(life)
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Life {
    pub(crate) fn new(pool_size: u32) -> Self {
        Life {
            epoch: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            live: AtomicU32::new(0),
            opening: AtomicU32::new(0),
            past_limit_at: AtomicU32::new(0),
            emptied: Notify::new(),
            born: Instant::now(),
            turns: Turns::new(pool_size),
        }
    }

    /// The epoch new connections are stamped with (never [`RETIRED`]).
    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Starts a new epoch: no connection stamped before is current any more.
    pub(super) fn next_epoch(&self) {
        if self.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1) == RETIRED {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks the pool closed: no connection is current any more.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// True when a connection stamped `epoch` may still be handed out.
    #[inline]
    pub(crate) fn is_current(&self, epoch: u32) -> bool {
        !self.closed.load(Ordering::Acquire) && self.epoch() == epoch
    }

    /// Milliseconds since the pool was made, wrapping every 49 days: a small, cheap
    /// timestamp for each connection (compare with `wrapping_sub`).
    pub(crate) fn now_ms(&self) -> u32 {
        // Truncation is the wrap.
        self.born.elapsed().as_millis() as u32
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Connections of the pool that exist now, pooled or checked out.
    pub(crate) fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }

    /// Connections of the pool being opened now.
    pub(crate) fn opening(&self) -> u32 {
        self.opening.load(Ordering::Acquire)
    }

    /// True, for one caller, when no dial past a connection cap's limit started within
    /// `every`: the server may take more by now, and one dial finds out; the rest are
    /// refused without one.
    pub(crate) fn may_dial_past_limit(&self, every: std::time::Duration) -> bool {
        let every = u32::try_from(every.as_millis()).unwrap_or(u32::MAX);
        let now = self.now_ms();
        let last = self.past_limit_at.load(Ordering::Relaxed);
        now.wrapping_sub(last) >= every
            && self
                .past_limit_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Completes once no connection of the pool exists (at once if none does now).
    pub(crate) async fn none_live(&self) {
        loop {
            // Made before the look at the count, so the last connection going in between
            // is not missed: a notification made since completes it.
            let emptied = self.emptied.notified();
            if self.live() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Life, Live};

    /// Dials past a connection cap's limit: one per interval, to one caller.
    #[tokio::test(start_paused = true)]
    async fn one_dial_past_the_limit_per_interval() {
        let life = Life::new(4);
        let every = Duration::from_millis(250);
        assert!(
            !life.may_dial_past_limit(every),
            "none in the pool's first interval"
        );
        tokio::time::advance(every).await;
        assert!(life.may_dial_past_limit(every));
        assert!(!life.may_dial_past_limit(every), "one per interval");
        tokio::time::advance(every / 2).await;
        assert!(!life.may_dial_past_limit(every));
        tokio::time::advance(every / 2).await;
        assert!(life.may_dial_past_limit(every));
    }

    /// A wait for no connection to be left ends as the last one goes, not before, and at
    /// once when there is none.
    #[tokio::test]
    async fn a_wait_for_none_live_ends_with_the_last_connection() {
        let life = Arc::new(Life::new(4));
        life.none_live().await;

        let (a, b) = (Live::new(&life), Live::new(&life));
        let waiter = tokio::spawn({
            let life = life.clone();
            async move { life.none_live().await }
        });
        tokio::task::yield_now().await;
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still live");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the wait ends with the last connection")
            .expect("the waiter does not panic");
    }
}
