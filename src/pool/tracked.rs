//! [`Tracked`]: the adapter the pool puts around a backend's bb8 manager. It stamps every
//! connection with the epoch it was made in, so the pool (not each connection type)
//! retires every connection made before an outage, and it tells bb8's error sink which
//! failures are news: a fresh connection that failed ([`Fault::Connect`]) is; an old one
//! that failed validation ([`Fault::Invalid`]) or was retired ([`Fault::Retired`]) is not.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use super::backend::{Backend, Bb8Manager};
use crate::error::{Error, Origin, TimeoutKind};
use crate::health::{Health, Life, Live, Opening, RETIRED};

/// What a [`Tracked`] manager and its pool share.
pub(crate) struct Parts<M: Bb8Manager> {
    pub(crate) manager: M,
    pub(crate) backend: Box<dyn Backend<Manager = M>>,
    /// [`Backend::checks_locally`], asked once.
    pub(crate) checks_locally: bool,
    pub(crate) life: Arc<Life>,
    /// Told of every connection made, so a limit follows what the server accepts.
    pub(crate) health: Arc<Health>,
    /// Run on every new connection before it is pooled.
    pub(crate) on_connect: Option<super::OnConnect<M::Connection>>,
    /// The connector, as a failed hook's error names it.
    pub(crate) origin: Origin,
    /// How long a hook may take.
    pub(crate) connect_timeout: Duration,
    /// Event metrics: connection create time, checkout wait and use time, timeouts.
    #[cfg(feature = "metrics")]
    pub(crate) meters: crate::metrics::PoolMeters,
}

/// A backend's bb8 manager with the pool's epoch: the manager of the `bb8::Pool` behind a
/// [`Pool`](crate::Pool).
pub(crate) struct Tracked<M: Bb8Manager> {
    pub(crate) parts: Arc<Parts<M>>,
}

impl<M: Bb8Manager> std::fmt::Debug for Tracked<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("kind", &self.parts.backend.kind())
            .field("epoch", &self.parts.life.epoch())
            .finish_non_exhaustive()
    }
}

/// A pooled connection with the epoch it was made in; derefs to the backend's connection.
///
/// Kept small (it is moved in and out of bb8's queue on every checkout, and bb8's guard
/// around it is copied inline only up to 128 bytes): the stamps are 32-bit, and what a
/// checkout does not read is kept out of line.
pub(crate) struct Stamped<C> {
    conn: C,
    /// The epoch it was made in, or [`RETIRED`].
    epoch: u32,
    /// When it was made or last passed the manager's `is_valid` round trip
    /// ([`Life::now_ms`]): within [`VOUCHED_FOR`] of that, a checkout skips the round trip.
    vouched: u32,
    /// Allocated once, when the connection is made.
    held: Box<Held>,
}

/// What a [`Stamped`] connection keeps out of line.
struct Held {
    /// Counts it among the pool's connections while it exists.
    live: Live,
    /// Why its `on_connect` hook failed: the caller that gets it is told, and it is
    /// dropped.
    hook_failed: Option<Error>,
}

impl<C> Stamped<C> {
    pub(crate) fn new(conn: C, epoch: u32, life: &Arc<Life>) -> Self {
        Stamped {
            conn,
            epoch,
            vouched: life.now_ms(),
            held: Box::new(Held {
                live: Live::new(life),
                hook_failed: None,
            }),
        }
    }

    /// The life of the pool it belongs to, where the pool's turns are.
    #[inline]
    pub(crate) fn life(&self) -> &Arc<crate::health::Life> {
        self.held.live.life()
    }

    /// Marks it for dropping when it goes back to the pool.
    pub(crate) fn retire(&mut self) {
        self.epoch = RETIRED;
    }

    /// Stamps it with the pool's current epoch: it was proven to work after the
    /// connections of its own epoch were retired.
    pub(crate) fn restamp(&mut self, life: &Life) {
        self.epoch = life.epoch();
    }

    /// Why its `on_connect` hook failed, once; it is retired then.
    pub(crate) fn take_hook_failure(&mut self) -> Option<Error> {
        let failed = self.held.hook_failed.take()?;
        self.retire();
        Some(failed)
    }

    /// True when it was made or last validated within [`VOUCHED_FOR`].
    fn vouched_for(&self, life: &Life) -> bool {
        let ms = u32::try_from(VOUCHED_FOR.as_millis()).unwrap_or(u32::MAX);
        life.now_ms().wrapping_sub(self.vouched) < ms
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for Stamped<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stamped")
            .field("conn", &self.conn)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl<C> Deref for Stamped<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> DerefMut for Stamped<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

/// How long a connection that was just made, or just passed the manager's `is_valid`
/// round trip, is taken to work without another at checkout (HikariCP's alive-bypass
/// window). A busy pool hands the same connections out again within microseconds; a
/// validation round trip each time would double the cost of every short call, where
/// this costs one per connection per window.
///
/// The window runs from the last validation, not the last use, and is shorter than
/// HikariCP's 500 ms: a plain manager's `has_broken` may never say a connection broke
/// (bb8-redis' does not), where a JDBC driver's fatal errors evict the connection. A
/// connection whose server closed it would otherwise come back "unbroken" after every
/// failed call and be handed out for ever under steady use; here it is handed out for
/// at most the window, at the cost of one round trip per connection every 100 ms
/// (`add_pool(bb8-redis)`, 64 callers, `CLIENT KILL` every 200 ms for 3 s: 14 k calls
/// served and 512 k failed in flight with 500 ms, 65 k and 144 k with 100 ms).
pub(crate) const VOUCHED_FOR: Duration = Duration::from_millis(100);

/// Why the adapter refused or failed a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Fault<E> {
    /// A fresh connection could not be made.
    #[error("{0}")]
    Connect(E),
    /// A pooled connection failed its validation; another one is tried.
    #[error("pooled connection failed validation: {0}")]
    Invalid(E),
    /// A pooled connection was broken, or made before the connector last went down.
    #[error("connection retired (broken, or made before an outage)")]
    Retired,
}

impl<M: Bb8Manager> Tracked<M> {
    /// Runs the `on_connect` hook, bounded by `connect_timeout`. A failure is the
    /// connection's, not the connector's (the server answered): it goes to the caller
    /// that gets the connection, not to bb8's error sink.
    async fn hook(
        &self,
        hook: &super::OnConnect<M::Connection>,
        conn: &mut M::Connection,
    ) -> Result<(), Error> {
        use futures_util::FutureExt;
        let p = &*self.parts;
        // A panicking hook fails its connection like an error would: unwinding through
        // bb8's connect would leave the pool counting a connection that never comes.
        let run = std::panic::AssertUnwindSafe(hook.run(conn)).catch_unwind();
        let failed = match tokio::time::timeout(p.connect_timeout, run).await {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(e))) => Error::Hook {
                origin: p.origin.clone(),
                source: Arc::from(e),
            },
            Ok(Err(panic)) => Error::Hook {
                origin: p.origin.clone(),
                source: Arc::new(HookPanicked(panic_message(&*panic))),
            },
            Err(_) => {
                Error::timed_out(p.origin.clone(), TimeoutKind::Hook, p.connect_timeout, None)
            }
        };
        tracing::warn!(connector = %p.origin.connector, kind = %p.origin.kind, error = %failed, "on_connect hook failed; the connection will be dropped");
        Err(failed)
    }

    /// True when `conn` may be handed out without asking the server.
    fn current(&self, conn: &Stamped<M::Connection>) -> bool {
        self.parts.life.is_current(conn.epoch)
    }

    /// True when bb8's request for a connection is to be refused without a dial: the
    /// server refuses more connections than the pool holds (or is opening) now, and a
    /// dial past that limit started within `reconnect_interval`. bb8 asks on every
    /// checkout while the pool holds fewer than `min_idle` (and after every drop and
    /// reaper run), so above a server's cap it would dial without end, thousands of
    /// times a second under load. One dial per interval finds out, while callers ask,
    /// that the server takes more (the health engine's growth trials do when nobody
    /// does).
    fn held_back(&self) -> bool {
        let p = &*self.parts;
        let life = &p.life;
        p.health
            .limit()
            .is_some_and(|limit| life.live() + life.opening() >= limit)
            && !life.may_dial_past_limit(p.health.config.reconnect_interval)
    }

    /// Opens a connection now, stamped with the current epoch, counted while on its way
    /// and once made, its `on_connect` hook run. What bb8 asks for, and what the pool
    /// opens itself (trials, growth, a connection for one caller).
    pub(crate) async fn dial(&self) -> Result<Stamped<M::Connection>, Fault<M::Error>> {
        let life = &self.parts.life;
        if life.is_closed() {
            return Err(Fault::Retired);
        }
        // Stamped before connecting: if the connector goes down meanwhile, this connection
        // is retired with the others.
        let epoch = life.epoch();
        #[cfg(feature = "metrics")]
        let started = tokio::time::Instant::now();
        // Counted as on its way until it is counted live; a failure is reported after
        // this count is dropped (bb8 reports it once this returns).
        let opening = Opening::new(life);
        let conn = self.parts.manager.connect().await.map_err(Fault::Connect)?;
        let mut conn = Stamped::new(conn, epoch, life);
        drop(opening);
        self.parts.health.connected();
        if let Some(hook) = &self.parts.on_connect {
            conn.held.hook_failed = self.hook(hook, &mut conn.conn).await.err();
        }
        #[cfg(feature = "metrics")]
        self.parts.meters.created(started.elapsed());
        Ok(conn)
    }
}

impl<M: Bb8Manager> bb8::ManageConnection for Tracked<M> {
    type Connection = Stamped<M::Connection>;
    type Error = Fault<M::Error>;

    /// bb8's own requests (checkouts finding none idle, `min_idle`): held back past a
    /// server's connection cap, one dial per `reconnect_interval` let through.
    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        if self.held_back() {
            return Err(Fault::Retired);
        }
        self.dial().await
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        if !self.current(conn) {
            return Err(Fault::Retired);
        }
        match self.parts.backend.is_broken(&conn.conn) {
            Some(true) => Err(Fault::Retired),
            Some(false) => Ok(()),
            None if conn.vouched_for(&self.parts.life) => Ok(()),
            None => {
                // Boxed: bb8 keeps this future in every checkout's, and most checkouts
                // never get here (connhub's own backends never do).
                let checked = Box::pin(self.parts.manager.is_valid(&mut conn.conn)).await;
                match checked {
                    Ok(()) => {
                        conn.vouched = self.parts.life.now_ms();
                        Ok(())
                    }
                    // Known broken from now on, so bb8 counts it once, as broken, when it
                    // drops it (it counts a failed validation apart, before).
                    Err(e) => {
                        conn.retire();
                        Err(Fault::Invalid(e))
                    }
                }
            }
        }
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        // The backend's own answer, where it has one, is the verdict (for connhub's
        // backends it is the manager's `has_broken`): one check, not two.
        !self.current(conn)
            || match self.parts.backend.is_broken(&conn.conn) {
                Some(broken) => broken,
                None => self.parts.manager.has_broken(&mut conn.conn),
            }
    }
}

/// An `on_connect` hook that panicked, with its panic message.
#[derive(Debug, thiserror::Error)]
#[error("the hook panicked: {0}")]
struct HookPanicked(String);

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;

    use super::Tracked;
    use crate::pool::{Bb8Manager, Pool};

    /// The size of bb8's guard around a connection of the pool type given.
    fn guard_size<M: Bb8Manager>(_: PhantomData<Pool<M>>) -> usize {
        size_of::<bb8::PooledConnection<'static, Tracked<M>>>()
    }

    /// bb8 moves its guard around a Redis connection several times on every checkout: at
    /// 128 bytes or less the compiler copies it inline, over that it calls `memcpy` each
    /// time. A field added to [`Stamped`](super::Stamped) goes out of line.
    #[test]
    fn a_pooled_redis_connection_is_copied_inline() {
        let size = guard_size(PhantomData::<crate::RedisPool>);
        assert!(
            size <= 128,
            "bb8's guard around a Redis connection is {size} bytes"
        );
    }
}
