//! [`Turns`]: how many callers may hold a connection at once. One turn per connection the
//! pool may hold, handed out first come, first served by a FIFO semaphore; the engine
//! lowers the count while the server refuses more connections (its connection cap), so
//! callers wait their turn on the connections it accepted instead of asking it for more,
//! and raises it again as the pool grows back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{Notify, Semaphore, TryAcquireError};

/// The pool's turns.
#[derive(Debug)]
pub(crate) struct Turns {
    semaphore: Semaphore,
    /// The pool's size: turns when nothing limits it.
    size: u32,
    /// Turns to keep out of circulation: `size` less what is allowed now.
    withhold: AtomicU32,
    /// Turns out of circulation now. Below `withhold`, a turn coming back is kept out
    /// instead of going to the next caller, so a lower limit holds even while every turn
    /// is in use.
    withheld: AtomicU32,
    /// Told when a turn comes back after close: the pool is draining.
    returned: Notify,
}

/// `withhold` once the turns are closed: every turn coming back says so.
const CLOSED: u32 = u32::MAX;

/// One caller's turn; given back (or kept out, under a lowered limit) when dropped.
#[derive(Debug)]
pub(crate) struct Turn(Arc<Turns>);

impl Drop for Turn {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// The turns are closed: the pool is.
#[derive(Debug)]
pub(crate) struct Closed;

impl Turns {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1);
        Turns {
            semaphore: Semaphore::new(usize::try_from(size).unwrap_or(usize::MAX)),
            size,
            withhold: AtomicU32::new(0),
            withheld: AtomicU32::new(0),
            returned: Notify::new(),
        }
    }

    /// A turn if one is free now. `Err(Closed)` once closed, `Ok(None)` when none is free.
    #[inline]
    pub(crate) fn try_take(this: &Arc<Self>) -> Result<Option<Turn>, Closed> {
        match this.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(Some(Turn(this.clone())))
            }
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(Closed),
        }
    }

    /// The next turn, in arrival order.
    pub(crate) async fn take(this: &Arc<Self>) -> Result<Turn, Closed> {
        let permit = this.semaphore.acquire().await.map_err(|_| Closed)?;
        permit.forget();
        Ok(Turn(this.clone()))
    }

    #[inline]
    fn give_back(&self) {
        let withhold = self.withhold.load(Ordering::Relaxed);
        if withhold == CLOSED {
            self.returned.notify_waiters();
            return;
        }
        if withhold > 0 {
            let mut held = self.withheld.load(Ordering::Acquire);
            while held < withhold {
                match self.withheld.compare_exchange_weak(
                    held,
                    held + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // Kept out: the limit is lower than the turns handed out.
                    Ok(_) => return,
                    Err(now) => held = now,
                }
            }
        }
        self.semaphore.add_permits(1);
    }

    /// Allows `n` turns at once (between one and the pool's size) from now on; nothing
    /// once closed.
    pub(crate) fn allow(&self, n: u32) {
        if self.withhold.load(Ordering::Acquire) == CLOSED {
            return;
        }
        let n = n.clamp(1, self.size);
        self.withhold.store(self.size - n, Ordering::Release);
        self.rebalance();
    }

    /// Allows the pool's whole size again.
    pub(crate) fn allow_all(&self) {
        self.allow(self.size);
    }

    /// Turns allowed at once now.
    pub(crate) fn allowed(&self) -> u32 {
        self.size
            .saturating_sub(self.withhold.load(Ordering::Acquire))
    }

    /// Brings the semaphore in line with what is allowed: takes out free turns above the
    /// limit (turns in use are kept out as they come back), or gives back the ones a
    /// raised limit frees.
    pub(crate) fn rebalance(&self) {
        if self.withhold.load(Ordering::Acquire) == CLOSED {
            return;
        }
        loop {
            let want = self.withhold.load(Ordering::Acquire);
            let held = self.withheld.load(Ordering::Acquire);
            if held < want {
                let Ok(permit) = self.semaphore.try_acquire() else {
                    return;
                };
                permit.forget();
                self.withheld.fetch_add(1, Ordering::AcqRel);
            } else if held > want {
                if self
                    .withheld
                    .compare_exchange(held, held - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.semaphore.add_permits(1);
                }
            } else {
                return;
            }
        }
    }

    /// No more turns: every caller waiting for one is refused, and each turn that comes
    /// back from now on wakes [`returned`](Turns::returned).
    pub(crate) fn close(&self) {
        self.withhold.store(CLOSED, Ordering::Release);
        self.semaphore.close();
    }

    /// Completes when a turn comes back after close. Create it before looking at what is
    /// still out, so a return in between is not missed.
    pub(crate) fn returned(&self) -> tokio::sync::futures::Notified<'_> {
        self.returned.notified()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Turns;

    fn free(turns: &Turns) -> usize {
        turns.semaphore.available_permits()
    }

    #[test]
    fn a_limit_takes_free_turns_at_once_and_held_ones_as_they_come_back() {
        let turns = Arc::new(Turns::new(4));
        let held: Vec<_> = (0..3)
            .map(|_| Turns::try_take(&turns).unwrap().unwrap())
            .collect();
        turns.allow(2);
        assert_eq!(free(&turns), 0, "the free turn is taken out");
        let mut held = held.into_iter();
        drop(held.next());
        assert_eq!(
            free(&turns),
            0,
            "a turn coming back above the limit is kept out"
        );
        drop(held.next());
        assert_eq!(
            free(&turns),
            1,
            "within the limit it goes to the next caller"
        );
        drop(held);
        assert_eq!(free(&turns), 2);
        turns.allow(3);
        assert_eq!(free(&turns), 3);
        turns.allow_all();
        assert_eq!(free(&turns), 4);
        assert_eq!(turns.allowed(), 4);
        turns.allow(0);
        assert_eq!(turns.allowed(), 1, "never fewer than one turn");
        assert_eq!(free(&turns), 1);
        turns.close();
        assert!(Turns::try_take(&turns).is_err());
    }

    #[tokio::test]
    async fn a_turn_coming_back_after_close_says_so() {
        let turns = Arc::new(Turns::new(2));
        let held = Turns::try_take(&turns).unwrap().unwrap();
        turns.close();
        let returned = turns.returned();
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), returned)
            .await
            .expect("the drain is told at once");
        turns.allow(1);
        assert!(Turns::try_take(&turns).is_err(), "closed: no turn again");
    }
}
