//! [`Turns`]: how many callers may hold a connection at once. One turn per connection the
//! pool may hold, handed out first come, first served; the engine lowers the count while
//! the server refuses more connections (its connection cap), so callers wait their turn on
//! the connections it accepted instead of asking it for more, and raises it again as the
//! pool grows back.
//!
//! Free turns sit in one of two places. While nobody waits they are *spare*: an atomic
//! count, so taking one and giving it back are one atomic operation each, the same cost
//! as bb8's own bookkeeping. Callers that find none wait in line in a FIFO semaphore; a
//! turn given back while someone waits goes to the semaphore, which hands it to the first
//! in line. A caller counts itself among the waiters before it looks at the spare turns
//! one last time, and a turn is counted spare before its giver looks for waiters
//! (sequentially consistent on both sides), so either the caller sees the turn or the
//! giver sees the caller: no turn stays spare while someone waits for it.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{Notify, Semaphore, TryAcquireError};

/// The pool's turns.
#[derive(Debug)]
pub(crate) struct Turns {
    /// Free turns while nobody waits, or'ed with [`SPARE_CLOSED`] once closed.
    spare: AtomicU32,
    /// Callers in [`take`](Turns::take): while any, a turn given back goes to the line.
    waiters: AtomicU32,
    /// The line, first come, first served, and the free turns given back while it was
    /// not empty.
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

/// The bit set in `spare` once the turns are closed.
const SPARE_CLOSED: u32 = 1 << 31;

/// One caller's turn while it checks out; given back (or kept out, under a lowered limit)
/// when dropped, or [handed over](Turn::hand_over) to the connection it got.
#[derive(Debug)]
pub(crate) struct Turn<'a>(&'a Turns);

impl Turn<'_> {
    /// The checkout is done: its connection holds the turn from now on, and gives it back
    /// with [`Turns::give_back`] (it reaches the turns through the pool's [`Life`], which
    /// it holds), so a checkout costs no reference count of its own.
    ///
    /// [`Life`]: super::Life
    #[inline]
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// The turns are closed: the pool is.
#[derive(Debug)]
pub(crate) struct Closed;

/// Counts a caller among the waiters while it lives (a cancelled wait included).
struct Waiter<'a>(&'a AtomicU32);

impl<'a> Waiter<'a> {
    fn count(waiters: &'a AtomicU32) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Waiter(waiters)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Turns {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, SPARE_CLOSED - 1);
        Turns {
            spare: AtomicU32::new(size),
            waiters: AtomicU32::new(0),
            semaphore: Semaphore::new(0),
            size,
            withhold: AtomicU32::new(0),
            withheld: AtomicU32::new(0),
            returned: Notify::new(),
        }
    }

    /// A turn if one is free now and nobody is waiting for one. `Err(Closed)` once
    /// closed, `Ok(None)` when none is free.
    #[inline]
    pub(crate) fn try_take(&self) -> Result<Option<Turn<'_>>, Closed> {
        // Nobody in line: a spare turn is the caller's. Otherwise the semaphore decides,
        // and it serves the line first.
        if self.waiters.load(Ordering::SeqCst) == 0 {
            match self.take_spare() {
                Ok(true) => return Ok(Some(Turn(self))),
                Ok(false) => {}
                Err(Closed) => return Err(Closed),
            }
        }
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(Some(Turn(self)))
            }
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(Closed),
        }
    }

    /// The next turn, in arrival order.
    pub(crate) async fn take(&self) -> Result<Turn<'_>, Closed> {
        let _waiting = Waiter::count(&self.waiters);
        // Counted first: a turn given back from now on goes to the line. One given back
        // before may still be spare; it is this caller's.
        if self.take_spare()? {
            return Ok(Turn(self));
        }
        let permit = self.semaphore.acquire().await.map_err(|_| Closed)?;
        permit.forget();
        Ok(Turn(self))
    }

    /// Takes one spare turn: `Ok(false)` when there is none.
    #[inline]
    fn take_spare(&self) -> Result<bool, Closed> {
        let mut n = self.spare.load(Ordering::SeqCst);
        loop {
            if n & SPARE_CLOSED != 0 {
                return Err(Closed);
            }
            if n == 0 {
                return Ok(false);
            }
            match self
                .spare
                .compare_exchange_weak(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(true),
                Err(now) => n = now,
            }
        }
    }

    /// Puts a free turn back in circulation: spare while nobody waits, else to the line.
    #[inline]
    fn release(&self) {
        let before = self.spare.fetch_add(1, Ordering::SeqCst);
        if before & SPARE_CLOSED != 0 {
            return;
        }
        // Someone may have counted itself in line after its last look at the spare
        // turns: move one turn over to the line for it (unless another caller took it).
        if self.waiters.load(Ordering::SeqCst) > 0 && matches!(self.take_spare(), Ok(true)) {
            self.semaphore.add_permits(1);
        }
    }

    /// True while a caller waits in line for a turn.
    #[inline]
    pub(crate) fn in_line(&self) -> bool {
        self.waiting() > 0
    }

    /// Callers waiting in line for a turn now.
    #[inline]
    pub(crate) fn waiting(&self) -> u32 {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Gives a turn back: to the next caller, or kept out under a lowered limit.
    #[inline]
    pub(crate) fn give_back(&self) {
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
        self.release();
    }

    /// A free turn taken out of circulation without waiting, spare or from the semaphore.
    fn take_free(&self) -> bool {
        if matches!(self.take_spare(), Ok(true)) {
            return true;
        }
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
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

    /// Brings the free turns in line with what is allowed: takes out free turns above the
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
                if !self.take_free() {
                    return;
                }
                self.withheld.fetch_add(1, Ordering::AcqRel);
            } else if held > want {
                if self
                    .withheld
                    .compare_exchange(held, held - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.release();
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
        self.spare.fetch_or(SPARE_CLOSED, Ordering::SeqCst);
        self.semaphore.close();
    }

    /// Completes when a turn comes back after close. Create it before looking at what is
    /// still out, so a return in between is not missed.
    pub(crate) fn returned(&self) -> tokio::sync::futures::Notified<'_> {
        self.returned.notified()
    }
}

#[cfg(test)]
mod tests;
