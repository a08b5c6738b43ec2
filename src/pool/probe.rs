//! The pool's trials for its health engine: a check on an idle connection or a fresh one,
//! a check on the pool's own connections while a connection cap limits it, and one more
//! connection to grow a limited pool back.

use std::future::Future;
use std::time::Duration;

use futures_util::TryFutureExt;
use tokio::time::Instant;

use super::tracked::Stamped;
use super::{Bb8Manager, Fault, Inner, Pool, Tracked};
use crate::error::{Result, TimeoutKind};
use crate::health::{self, Probe, Trial, TrialFailure, TrialFuture};
use crate::status::State;

/// How long a check waits for an idle connection's answer before it tries a fresh
/// connection beside it. A server answers a `PING` in well under a millisecond; an idle
/// connection that went silent (a NAT or load balancer dropped its flow without a word)
/// would otherwise be taken for the server, and the connector judged down by one
/// connection.
const HEDGE_AFTER: Duration = Duration::from_millis(250);

/// How a check of an idle connection, with a fresh one beside it after [`HEDGE_AFTER`],
/// came out.
enum Hedged<C> {
    /// The idle connection answered, or failed, before a fresh one answered.
    Idle(Result<()>),
    /// The server had closed the idle connection; how the fresh one did.
    Replaced(Result<Stamped<C>, TrialFailure>),
    /// The fresh connection answered while the idle one had not.
    Silent(Stamped<C>),
}

impl<M: Bb8Manager> Inner<M> {
    /// One trial of the backend: a round trip on an idle pooled connection when the
    /// connector is up, one is idle and the backend checks locally, else on a fresh
    /// connection. Each bounded by `connect_timeout`. A fresh connection that works joins
    /// the pool.
    async fn probe(&self) -> Result<Duration, TrialFailure> {
        let h = &*self.health;
        // An idle connection is probed only where taking it costs no round trip: a
        // plain bb8 manager validates at checkout, and a validation cut short at the
        // first poll could leave its connection in a state nobody expects.
        if h.state() == State::Healthy
            && self.parts.checks_locally
            && let Some(conn) = self.idle_now()
        {
            return self.probe_idle(conn).await;
        }
        let start = Instant::now();
        self.probe_fresh(start).await.map(|()| start.elapsed())
    }

    /// A round trip on the idle connection `conn`; if the server had closed it, it is
    /// dropped and a fresh one is tried. If it has not answered within [`HEDGE_AFTER`], a
    /// fresh connection is tried beside it, both due within `connect_timeout`, and the
    /// first to succeed decides: the server is down only if neither does. A fresh one
    /// that succeeds while `conn` did not shows `conn` went silent, and the connections
    /// made before it with it: they are retired, and the fresh one joins the pool.
    async fn probe_idle(&self, mut conn: IdleConnection<M>) -> Result<Duration, TrialFailure> {
        let h = &*self.health;
        let start = Instant::now();
        let hedged = {
            let mut idle = std::pin::pin!(self.round_trip(&mut conn, start));
            match tokio::time::timeout(HEDGE_AFTER, idle.as_mut()).await {
                Ok(answer) => Hedged::Idle(answer),
                Err(_hedge) => {
                    let mut fresh = std::pin::pin!(self.fresh(start));
                    tokio::select! {
                        // The first to answer decides.
                        answer = idle.as_mut() => match answer {
                            Ok(()) => Hedged::Idle(Ok(())),
                            Err(e) => match fresh.await {
                                opened if e.is_dropped() => Hedged::Replaced(opened),
                                Ok(fresh) => Hedged::Silent(fresh),
                                Err(_) => Hedged::Idle(Err(e)),
                            },
                        },
                        opened = fresh.as_mut() => match opened {
                            Ok(fresh) => Hedged::Silent(fresh),
                            Err(failed) => match idle.await {
                                Err(e) if e.is_dropped() => Hedged::Replaced(Err(failed)),
                                answer => Hedged::Idle(answer),
                            },
                        },
                    }
                }
            }
        };
        match hedged {
            Hedged::Idle(Ok(())) => Ok(start.elapsed()),
            Hedged::Idle(Err(e)) if !e.is_dropped() => {
                conn.retire();
                Err(TrialFailure {
                    error: e,
                    taken_connection: true,
                })
            }
            Hedged::Idle(Err(e)) => {
                conn.retire();
                tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "idle connection was closed; trying a fresh one");
                let start = Instant::now();
                self.probe_fresh(start).await.map(|()| start.elapsed())
            }
            Hedged::Replaced(fresh) => {
                conn.retire();
                self.adopt(fresh?);
                Ok(start.elapsed())
            }
            Hedged::Silent(mut fresh) => {
                conn.retire();
                drop(conn);
                tracing::warn!(connector = %h.name, kind = %h.kind, "an idle connection went silent while a fresh one answered; retiring the connections made before");
                h.retire_connections();
                fresh.restamp(&h.life);
                self.adopt(fresh);
                Ok(start.elapsed())
            }
        }
    }

    /// The backend's check on `conn`, due within `connect_timeout` of `start`.
    async fn round_trip(&self, conn: &mut M::Connection, start: Instant) -> Result<()> {
        let h = &*self.health;
        let parts = &*self.parts;
        let limit = h.config.connect_timeout;
        let check = parts.backend.probe(&parts.manager, conn);
        match tokio::time::timeout_at(start + limit, check).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(parts.backend.classify(&h.name, e)),
            Err(_elapsed) => Err(h.timeout(TimeoutKind::HealthCheck, limit)),
        }
    }

    /// A round trip on a fresh connection, which joins the pool if it answers; due within
    /// `connect_timeout` of `start`, and named the health check if it is not. Once the
    /// server took the connection, a failure other than closing it fails the trial as
    /// one on a connection it took.
    async fn probe_fresh(&self, start: Instant) -> Result<(), TrialFailure> {
        let conn = self.fresh(start).await?;
        // The proven connection serves the next checkout; a full pool just drops it.
        self.adopt(conn);
        Ok(())
    }

    /// A fresh connection that answered a round trip, due within `connect_timeout` of
    /// `start`; see [`probe_fresh`](Self::probe_fresh).
    async fn fresh(&self, start: Instant) -> Result<Stamped<M::Connection>, TrialFailure> {
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        let opened = tokio::time::timeout_at(start + limit, self.dial());
        let mut conn = match opened.await {
            Ok(Ok(conn)) => conn,
            Ok(Err(f)) => return Err(self.open_failed(f).into()),
            Err(_elapsed) => return Err(h.timeout(TimeoutKind::HealthCheck, limit).into()),
        };
        if let Err(e) = self.round_trip(&mut conn, start).await {
            return Err(TrialFailure {
                taken_connection: !e.is_dropped(),
                error: e,
            });
        }
        Ok(conn)
    }

    /// The check while the pool is limited: a round trip on one of the pool's own
    /// connections, and from [`HEDGE_AFTER`] on another beside it (one connection that
    /// went silent is not the server). Bounded by `connect_timeout`; see
    /// [`pooled_answer`](Self::pooled_answer).
    async fn probe_pooled(&self) -> Result<Duration, TrialFailure> {
        self.timed(hedge(self.pooled_answer(), self.pooled_answer()))
            .await
    }

    /// A round trip on one of the pool's own connections, waiting for one if all are in
    /// use (a fresh one would be refused). A connection found lost (the server closed it
    /// while idle, say) is dropped and the next one tried; once none is left, a fresh one
    /// is, as the server may have room again. Fails on a connection the server had taken
    /// when a pooled connection's check fails for any other reason; else as the fresh
    /// one failed (a refusal there may be the cap, filled by the pool's own replacements
    /// of the connections it lost). A connection whose check is given up before it ends
    /// is retired.
    async fn pooled_answer(&self) -> Result<(), TrialFailure> {
        let h = &*self.health;
        let parts = &*self.parts;
        let limit = h.config.connect_timeout;
        loop {
            let got = tokio::select! {
                got = self.bb8.get() => got,
                () = h.life.none_live() => break,
            };
            let conn = got.map_err(|e| match e {
                bb8::RunError::User(Fault::Connect(e)) => {
                    TrialFailure::from(parts.backend.classify(&h.name, e))
                }
                bb8::RunError::User(Fault::Invalid(e)) => taken(parts.backend.classify(&h.name, e)),
                bb8::RunError::User(Fault::Retired) => taken(h.closed()),
                bb8::RunError::TimedOut => taken(h.timeout(TimeoutKind::HealthCheck, limit)),
            })?;
            let mut checked = UnderCheck { conn, done: false };
            let answer = parts.backend.probe(&parts.manager, &mut checked.conn).await;
            checked.done = true;
            let Err(e) = answer else {
                return Ok(());
            };
            checked.conn.retire();
            let e = parts.backend.classify(&h.name, e);
            if !e.is_dropped() {
                return Err(taken(e));
            }
            tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "pooled connection was lost; checking the next");
        }
        self.probe_fresh(Instant::now()).await
    }

    /// `check`, bounded by `connect_timeout`: how long it took, or why it failed. Not
    /// answering in time is a failure on a connection the server had taken.
    async fn timed(
        &self,
        check: impl Future<Output = Result<(), TrialFailure>>,
    ) -> Result<Duration, TrialFailure> {
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        let start = Instant::now();
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(taken(h.timeout(TimeoutKind::HealthCheck, limit))),
        }
    }

    /// One more connection for a limited pool: opened fresh and pooled if the server
    /// takes it. Bounded by `connect_timeout`.
    async fn grow(&self) -> Result<Duration> {
        let start = Instant::now();
        let conn = self.open_dedicated().await?;
        self.adopt(conn);
        Ok(start.elapsed())
    }
}

/// A failure on a connection the server had taken: an outage, whatever the error.
fn taken(error: crate::error::Error) -> TrialFailure {
    TrialFailure {
        error,
        taken_connection: true,
    }
}

/// `first`, and from [`HEDGE_AFTER`] on `second` beside it: the first to succeed
/// decides. It fails only when both failed, with `first`'s failure.
async fn hedge<E>(
    first: impl Future<Output = std::result::Result<(), E>>,
    second: impl Future<Output = std::result::Result<(), E>>,
) -> std::result::Result<(), E> {
    let mut first = std::pin::pin!(first);
    if let Ok(answer) = tokio::time::timeout(HEDGE_AFTER, first.as_mut()).await {
        return answer;
    }
    let mut second = std::pin::pin!(second);
    tokio::select! {
        answer = first.as_mut() => match answer {
            Ok(()) => Ok(()),
            Err(e) => second.await.map_err(|_| e),
        },
        answer = second.as_mut() => match answer {
            Ok(()) => Ok(()),
            Err(_) => first.await,
        },
    }
}

/// A pooled connection under a check: retired if the check is given up before it ends
/// (its answer may still come, to whoever has it next).
struct UnderCheck<'a, M: Bb8Manager> {
    conn: bb8::PooledConnection<'a, Tracked<M>>,
    done: bool,
}

impl<M: Bb8Manager> Drop for UnderCheck<'_, M> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.retire();
        }
    }
}

/// An idle connection taken out of the pool for a check.
type IdleConnection<M> = bb8::PooledConnection<'static, Tracked<M>>;

impl<M: Bb8Manager> Trial for Inner<M> {
    fn trial(&self, probe: Probe) -> TrialFuture<'_> {
        match probe {
            Probe::Check => Box::pin(self.probe()),
            Probe::Pooled => Box::pin(self.probe_pooled()),
            Probe::Grow => Box::pin(self.grow().map_err(TrialFailure::from)),
        }
    }

    fn after_trial(&self) {
        #[cfg(feature = "metrics")]
        if !self.health.is_replaced() {
            crate::metrics::record(&self.status());
        }
    }
}

impl<M: Bb8Manager> Pool<M> {
    /// A check now, outside the engine's schedule, with all its consequences (a failure
    /// of a fresh connection moves the connector down; success brings it up).
    pub(super) async fn check_now(&self) -> Result<Duration> {
        let h = &*self.inner.health;
        if h.state() == State::Closed {
            return Err(h.closed());
        }
        health::run_trial(h, &*self.inner, h.check_probe()).await
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::{HEDGE_AFTER, hedge};
    use crate::error::{Error, Result};

    fn failed() -> Error {
        Error::Closed { origin: None }
    }

    async fn after(d: Duration, r: Result<()>) -> Result<()> {
        tokio::time::sleep(d).await;
        r
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_hedge_starts_nothing_beside_it() {
        let started = AtomicBool::new(false);
        let second = async {
            started.store(true, Ordering::Relaxed);
            Ok(())
        };
        let r = hedge(after(HEDGE_AFTER / 2, Err(failed())), second).await;
        assert!(matches!(r, Err(Error::Closed { .. })));
        assert!(!started.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_first_is_decided_by_the_second() {
        let start = tokio::time::Instant::now();
        hedge(pending::<Result<()>>(), ready(Ok(()))).await.unwrap();
        assert_eq!(start.elapsed(), HEDGE_AFTER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_waits_for_the_other() {
        let late_ok = after(HEDGE_AFTER * 4, Ok(()));
        hedge(late_ok, after(HEDGE_AFTER, Err(failed())))
            .await
            .unwrap();
        let second_ok = after(HEDGE_AFTER * 4, Ok(()));
        hedge(after(HEDGE_AFTER * 2, Err(failed())), second_ok)
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn both_failing_tells_the_first_failure() {
        let first = after(HEDGE_AFTER * 2, Err(failed()));
        let second = ready(Err(Error::NotFound { name: "x".into() }));
        assert!(matches!(
            hedge(first, second).await,
            Err(Error::Closed { .. })
        ));
    }
}
