//! Checkout: fair admission (a turn, first come, first served), the fast path that awaits
//! nothing, the wait in line bounded by `connect_timeout`, and the refusals that fail fast
//! and yield while the connector is down.

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::{Bb8Manager, Fault, Inner, Pool, PooledConnection, Tracked};
use crate::error::{Error, Origin, Result, TimeoutKind};
use crate::health::Turn;
use crate::status::State;

impl<M: Bb8Manager> Pool<M> {
    /// Checks out a connection.
    ///
    /// While the connector is healthy this is a bb8 checkout and nothing more (for
    /// connhub's own backends, no round trip to the server). Callers are served in the
    /// order they asked.
    ///
    /// Errors: [`Error::Unavailable`] at once while the connector is down (with
    /// `fail_fast`, the default), [`Error::Auth`] / [`Error::Tls`] when that is why it is
    /// down, [`Error::Timeout`] when no connection came within `connect_timeout` (saying
    /// whether the pool was exhausted), [`Error::Closed`] after close. Every refusal
    /// yields to the runtime when the task's budget is spent, so retrying in a loop is
    /// safe.
    ///
    /// The connection holds its own reference to the pool, so it can outlive this handle
    /// (`manager.redis("cache")?.get().await?` works) and move into spawned tasks.
    ///
    /// A connection whose [`OnConnect`](super::OnConnect) hook failed is not handed out: its caller gets
    /// [`Error::Hook`], and the next checkout another connection. With
    /// `leak_detection_threshold` set, the line that called `get()` is named when the
    /// connection is held past it. After a [`reload`](crate::Manager::reload) replaced the
    /// connector, this handle checks out from the new pool.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<PooledConnection<M>>> + '_ {
        self.current().get_at(Location::caller())
    }

    /// The checkout future callers keep in their own. The fast path (admitted, a turn
    /// free, a connection idle) awaits nothing; the wait in line is inline, so a caller
    /// that waits allocates nothing for it; the rare rest (a refusal, a reload that
    /// closed this pool meanwhile) is boxed. No connection is kept across an await, so
    /// the future stays smaller than bb8's own checkout future.
    #[inline]
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice in its future"
    )]
    fn get_at(
        &self,
        at: &'static Location<'static>,
    ) -> impl Future<Output = Result<PooledConnection<M>>> {
        async move {
            let inner = &*self.inner;
            let turn = 'decide: {
                if !self.admits() {
                    return Box::pin(self.slow(at)).await;
                }
                let Ok(Some(turn)) = inner.turns().try_take() else {
                    break 'decide None;
                };
                let start = Since::now();
                if inner.parts.checks_locally
                    && let Some(conn) = inner.idle_now()
                {
                    return self.handed_out(conn, turn, start, at);
                }
                Some(turn)
            };
            // Matched apart from the await below, so the result is not kept across it.
            let e = match self.checkout(turn, Instant::now(), at).await {
                Err(e) => e,
                done => return done,
            };
            Box::pin(self.on_replacement(e, at)).await
        }
    }

    /// Refused at once, or no turn free: the refusal (asking for a trial, yielding to
    /// the runtime), or a wait in line.
    async fn slow(&self, at: &'static Location<'static>) -> Result<PooledConnection<M>> {
        let r = match self.admit_or_yield().await {
            Ok(()) => self.checkout(None, Instant::now(), at).await,
            Err(e) => Err(e),
        };
        match r {
            Err(e) => Box::pin(self.on_replacement(e, at)).await,
            done => done,
        }
    }

    /// A checkout failed with `e`: on to the pool that replaced this one if a reload
    /// closed it meanwhile, else `e`.
    async fn on_replacement(
        &self,
        e: Error,
        at: &'static Location<'static>,
    ) -> Result<PooledConnection<M>> {
        self.replaced_or(e)?.slow(at).await
    }

    /// A checkout done: the guard, its leak ticket, and (with metrics) how long it took;
    /// or, for a connection whose `on_connect` hook failed, the hook's error (the
    /// connection is dropped).
    #[inline(always)]
    fn handed_out(
        &self,
        mut conn: bb8::PooledConnection<'static, Tracked<M>>,
        turn: Turn<'_>,
        start: Since,
        at: &'static Location<'static>,
    ) -> Result<PooledConnection<M>> {
        if let Some(e) = conn.take_hook_failure() {
            return Err(e);
        }
        let leak = self.inner.leaks.as_ref().map(|l| l.checkout(at));
        #[cfg(feature = "metrics")]
        {
            let meters = &self.inner.parts.meters;
            meters.waited(start.elapsed());
            Ok(PooledConnection::new(
                conn,
                turn,
                leak,
                meters.use_time().clone(),
            ))
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = start;
            Ok(PooledConnection::new(conn, turn, leak))
        }
    }

    /// A refused caller: asks for a trial if one is due, and yields to the runtime when
    /// its budget is spent; then returns why it was refused.
    async fn refused(&self) -> Error {
        self.inner.health.demand();
        tokio::task::consume_budget().await;
        self.inner.health.unavailable()
    }

    /// The waiting path: a turn (in arrival order), then a connection, within
    /// `connect_timeout` of `start`, refused as soon as the connector goes down.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice in its future"
    )]
    fn checkout(
        &self,
        turn: Option<Turn<'_>>,
        start: Instant,
        at: &'static Location<'static>,
    ) -> impl Future<Output = Result<PooledConnection<M>>> {
        async move {
            let inner = &*self.inner;
            let h = &*inner.health;
            // Listen first, then look at the state, so no change can slip between.
            let down = h.went_down();
            self.admit()?;
            let in_line = std::sync::atomic::AtomicBool::new(turn.is_none());
            let wait = async {
                // A caller that came with its turn has just found no connection idle.
                let (turn, looked) = match turn {
                    Some(t) => (t, true),
                    None => {
                        let t = inner.turns().take().await.map_err(|_closed| h.closed())?;
                        (t, false)
                    }
                };
                in_line.store(false, Ordering::Relaxed);
                // bb8 validates every connection it hands out through the adapter (epoch,
                // broken flag), so one made before an outage never comes out of here. With a
                // turn, one is usually idle: taken without an await where validation never
                // waits. bb8's checkout future is boxed, kept out of this one, which callers
                // hold in theirs.
                if inner.parts.checks_locally
                    && !looked
                    && let Some(conn) = inner.idle_now()
                {
                    return self.handed_out(conn, turn, Since::of(start), at);
                }
                let conn = Box::pin(inner.bb8.get_owned())
                    .await
                    .map_err(|e| self.run_error(e))?;
                self.handed_out(conn, turn, Since::of(start), at)
            };
            // One deadline for the turn and the connection together. Nothing of the wait
            // is kept while a refusal yields.
            tokio::select! {
                biased;
                r = tokio::time::timeout_at(start + h.config.connect_timeout, wait) => {
                    // Through `self`, not `inner` and `h`: a closure naming those makes
                    // the future keep its own copies of them (16 bytes more).
                    return r.unwrap_or_else(|_elapsed| {
                        #[cfg(feature = "metrics")]
                        self.inner.parts.meters.timed_out();
                        Err(if in_line.load(Ordering::Relaxed) {
                            let turns = self.inner.turns();
                            self.exhausted(self.inner.health.config.connect_timeout, turns.waiting())
                        } else {
                            self.run_error(bb8::RunError::TimedOut)
                        })
                    });
                }
                () = down, if h.config.fail_fast => {}
            }
            Err(self.refused().await)
        }
    }

    fn exhausted(&self, after: Duration, waiting: u32) -> Error {
        let h = &*self.inner.health;
        let s = self.inner.bb8.state();
        Error::Timeout {
            origin: Origin::new(h.name.clone(), h.kind.clone()),
            what: TimeoutKind::Checkout,
            after,
            detail: Some(format!(
                "pool exhausted: all {} connections in use, {waiting} more callers waiting",
                s.connections
            )),
            last_error: h.last_error().map(Box::new),
        }
    }

    /// True while the server refuses more connections than the pool holds (its
    /// connection cap): the pool stays at what it has, `status().pool.limit`.
    pub(crate) fn limited(&self) -> bool {
        self.inner.health.limit().is_some()
    }

    /// True when [`admit`](Pool::admit) would let a caller in: for callers that only ask,
    /// so a refusal builds no error (with the connector's last one in it) to drop.
    #[inline]
    pub(crate) fn admits(&self) -> bool {
        let h = &*self.inner.health;
        match h.state() {
            State::Closed => false,
            State::Reconnecting | State::Failed => !h.config.fail_fast,
            _ => true,
        }
    }

    /// Refuses a checkout when the pool is closed, or down with `fail_fast`.
    pub(crate) fn admit(&self) -> Result<()> {
        if self.admits() {
            return Ok(());
        }
        // Closed, or down: `unavailable` tells the two apart.
        Err(self.inner.health.unavailable())
    }

    /// [`admit`](Pool::admit), but a refusal asks for a trial if one is due and yields
    /// to the runtime when the task's budget is spent: a caller retrying in a loop never
    /// starves the runtime. Holds nothing across the await, so the futures stay small.
    pub(crate) async fn admit_or_yield(&self) -> Result<()> {
        if self.admits() {
            return Ok(());
        }
        self.inner.health.demand();
        tokio::task::consume_budget().await;
        self.admit()
    }

    fn run_error(&self, e: bb8::RunError<Fault<M::Error>>) -> Error {
        let h = &*self.inner.health;
        match e {
            bb8::RunError::TimedOut => {
                if h.state() == State::Closed {
                    h.closed()
                } else {
                    h.timeout(TimeoutKind::Checkout, h.config.connect_timeout)
                }
            }
            bb8::RunError::User(Fault::Connect(e) | Fault::Invalid(e)) => {
                self.inner.parts.backend.classify(&h.name, e)
            }
            bb8::RunError::User(Fault::Retired) => h.unavailable(),
        }
    }
}

/// When a checkout started, kept only when metrics record how long it took: the fast path
/// reads no clock otherwise.
#[derive(Clone, Copy)]
struct Since(#[cfg(feature = "metrics")] Instant);

impl Since {
    fn now() -> Self {
        Since(
            #[cfg(feature = "metrics")]
            Instant::now(),
        )
    }

    fn of(start: Instant) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = start;
        Since(
            #[cfg(feature = "metrics")]
            start,
        )
    }

    #[cfg(feature = "metrics")]
    fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}

impl<M: Bb8Manager> Inner<M> {
    /// A usable idle connection, taken without waiting (one poll of bb8's checkout);
    /// `None` when none is idle. Only for backends that check connections locally, whose
    /// validation never waits: a pending poll is dropped here, and dropping a round trip
    /// half way could leave a connection in a state nobody expects.
    pub(super) fn idle_now(&self) -> Option<bb8::PooledConnection<'static, Tracked<M>>> {
        let mut cx = Context::from_waker(Waker::noop());
        let fut = std::pin::pin!(self.bb8.get_owned());
        match fut.poll(&mut cx) {
            Poll::Ready(Ok(conn)) => Some(conn),
            Poll::Ready(Err(_)) | Poll::Pending => None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// A caller that waits in line for a connection keeps the wait in its own future,
    /// which callers keep in theirs (an axum handler's, boxed per request): it stays
    /// no bigger than bb8's own checkout future (480 bytes for the same manager).
    #[tokio::test]
    async fn a_checkout_future_is_no_bigger_than_bb8s() {
        let mut config = crate::RedisConfig::default();
        config.connector.lazy_connect = true;
        let manager = crate::Manager::new();
        let pool = manager.add_redis("sizes", config).await.expect("lazy pool");
        let ours = size_of_val(&pool.get());
        let bb8s = size_of_val(&pool.inner.bb8.get());
        assert!(
            ours <= bb8s,
            "a checkout's future is {ours} bytes, bb8's {bb8s}"
        );
    }
}
