//! The pool's trials for its health engine: a check on an idle connection or a fresh one,
//! a check on the pool's own connections while a connection cap limits it, and one more
//! connection to grow a limited pool back.

use std::future::Future;
use std::time::Duration;

use futures_util::TryFutureExt;
use tokio::time::Instant;

use super::{Bb8Manager, Fault, Inner, Pool};
use crate::error::{Result, TimeoutKind};
use crate::health::{self, Probe, Trial, TrialFailure, TrialFuture};
use crate::status::State;

impl<M: Bb8Manager> Inner<M> {
    /// One trial of the backend: a round trip on an idle pooled connection when the
    /// connector is up, one is idle and the backend checks locally; if the server had
    /// closed that connection, it is dropped and a fresh one is tried. Each bounded by
    /// `connect_timeout`. A fresh connection that works joins the pool.
    async fn probe(&self) -> Result<Duration, TrialFailure> {
        let h = &*self.health;
        let parts = &*self.parts;
        // An idle connection is probed only where taking it costs no round trip: a
        // plain bb8 manager validates at checkout, and a validation cut short at the
        // first poll could leave its connection in a state nobody expects.
        if h.state() == State::Healthy
            && parts.checks_locally
            && let Some(mut conn) = self.idle_now()
        {
            let start = Instant::now();
            match self.round_trip(&mut conn, start).await {
                Ok(()) => return Ok(start.elapsed()),
                Err(e) if !e.is_dropped() => {
                    conn.retire();
                    return Err(TrialFailure {
                        error: e,
                        taken_connection: true,
                    });
                }
                Err(e) => {
                    conn.retire();
                    tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "idle connection was closed; trying a fresh one");
                }
            }
        }
        let start = Instant::now();
        self.probe_fresh(start).await.map(|()| start.elapsed())
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
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        let opened = tokio::time::timeout_at(start + limit, self.bb8.dedicated_connection());
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
        // The proven connection serves the next checkout; a full pool just drops it.
        self.adopt(conn);
        Ok(())
    }

    /// The check while the pool is limited: a round trip on one of the pool's own
    /// connections, waiting for one if all are in use (a fresh one would be refused).
    /// A connection found lost (the server closed it while idle, say) is dropped and the
    /// next one tried; once none is left, a fresh one is, as the server may have room
    /// again. Bounded by `connect_timeout`; fails when a connection's check fails for any
    /// other reason, when none answers in time, or when the fresh one fails too.
    async fn probe_pooled(&self) -> Result<Duration> {
        let h = &*self.health;
        let parts = &*self.parts;
        let limit = h.config.connect_timeout;
        let check = async {
            loop {
                let got = tokio::select! {
                    got = self.bb8.get() => got,
                    () = h.life.none_live() => break,
                };
                let mut conn = got.map_err(|e| match e {
                    bb8::RunError::User(Fault::Connect(e) | Fault::Invalid(e)) => {
                        parts.backend.classify(&h.name, e)
                    }
                    bb8::RunError::User(Fault::Retired) => h.closed(),
                    bb8::RunError::TimedOut => h.timeout(TimeoutKind::HealthCheck, limit),
                })?;
                let Err(e) = parts.backend.probe(&parts.manager, &mut conn).await else {
                    return Ok(());
                };
                conn.retire();
                let e = parts.backend.classify(&h.name, e);
                if !e.is_dropped() {
                    return Err(e);
                }
                tracing::debug!(connector = %h.name, kind = %h.kind, error = %e, "pooled connection was lost; checking the next");
            }
            // Any failure of this check is an outage already.
            self.probe_fresh(Instant::now()).await.map_err(|f| f.error)
        };
        self.timed(check).await
    }

    /// `check`, bounded by `connect_timeout`: how long it took, or why it failed.
    async fn timed(&self, check: impl Future<Output = Result<()>>) -> Result<Duration> {
        let h = &*self.health;
        let limit = h.config.connect_timeout;
        let start = Instant::now();
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(h.timeout(TimeoutKind::HealthCheck, limit)),
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

impl<M: Bb8Manager> Trial for Inner<M> {
    fn trial(&self, probe: Probe) -> TrialFuture<'_> {
        match probe {
            Probe::Check => Box::pin(self.probe()),
            Probe::Pooled => Box::pin(self.probe_pooled().map_err(TrialFailure::from)),
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
