//! The engine task of one connector: it ticks the machine when its timer is due, takes the
//! demand refused callers left, and runs the trials the machine asks for, one at a time.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::engine::Health;
use super::machine::{Actions, Input};
use crate::error::Result;
use crate::status::{BoxFuture, State};

/// One trial of the backend: a round trip on an idle connection, or on a fresh one when
/// that fails. An error means a fresh connection failed: the server is down.
pub(crate) trait Trial: Send + Sync + 'static {
    fn trial(&self) -> BoxFuture<'_, Result<Duration>>;

    /// Runs after each trial the task made (the pool records its metrics).
    fn after_trial(&self) {}
}

/// Runs `trial` and feeds its outcome to the machine; returns the outcome.
pub(crate) async fn run_trial(health: &Health, trial: &dyn Trial) -> Result<Duration> {
    let start = tokio::time::Instant::now();
    let r = trial.trial().await;
    match &r {
        Ok(latency) => {
            health.record_check(*latency, None);
            health.apply(Input::ProbeOk, None);
        }
        Err(e) => {
            tracing::warn!(connector = %health.name, kind = %health.kind, error = %e, "health check failed");
            health.record_check(start.elapsed(), Some(e));
            health.apply(Input::ProbeFailed, Some(e));
        }
    }
    r
}

/// Starts the task. It holds the pool only weakly, so dropping every handle ends it, and
/// it ends at close.
pub(crate) fn spawn<T: Trial>(health: Arc<Health>, pool: Weak<T>) {
    tokio::spawn(run(health, pool));
}

async fn run<T: Trial>(health: Arc<Health>, pool: Weak<T>) {
    loop {
        let woken = health.wake.notified();
        if health.state() == State::Closed {
            return;
        }
        let act: Actions = match health.take_demand() {
            Some(input) => health.apply(input, None),
            None => {
                let at = health.next_wake();
                let sleep = async {
                    match at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => health.apply(Input::Tick, None),
                    () = woken => continue,
                }
            }
        };
        if act.probe {
            let Some(pool) = pool.upgrade() else { return };
            let _ = run_trial(&health, &*pool).await;
            pool.after_trial();
        }
    }
}
