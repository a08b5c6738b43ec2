//! The engine task of one connector: it ticks the machine when its timer is due, takes the
//! demand refused callers left and the losses connections reported, and runs the trials
//! the machine asks for, one at a time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::engine::Health;
use super::machine::{Actions, Input, Probe};
use super::signal::LossSignal;
use crate::error::{Error, Result};
use crate::status::State;

/// A trial in flight.
pub(crate) type TrialFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Duration, TrialFailure>> + Send + 'a>>;

/// Why a trial failed, and whether it failed on a connection the server had taken (one
/// of the pool's, or the fresh one it opened) that then did not answer, or answered with
/// an error: a frozen server closes nothing and answers nothing, where a server at its
/// connection cap refuses new connections but serves the ones it let in.
#[derive(Debug)]
pub(crate) struct TrialFailure {
    pub(crate) error: Error,
    pub(crate) taken_connection: bool,
}

impl From<Error> for TrialFailure {
    /// A failure before any connection was taken (or one the server merely closed).
    fn from(error: Error) -> Self {
        TrialFailure {
            error,
            taken_connection: false,
        }
    }
}

/// The trials of a backend, as [`Probe`] names them. For [`Probe::Check`] and
/// [`Probe::Pooled`], an error means the server does not answer; for [`Probe::Grow`], that
/// the fresh connection failed.
pub(crate) trait Trial: Send + Sync + 'static {
    fn trial(&self, probe: Probe) -> TrialFuture<'_>;

    /// Runs after each trial the task made (the pool records its metrics).
    fn after_trial(&self) {}
}

/// Runs one trial and feeds its outcome to the machine; returns the outcome.
pub(crate) async fn run_trial(
    health: &Health,
    trial: &dyn Trial,
    probe: Probe,
) -> Result<Duration> {
    let start = tokio::time::Instant::now();
    let r = trial.trial(probe).await;
    match (&r, probe) {
        (Ok(_), Probe::Grow) => {
            health.apply(Input::Grew, None);
        }
        (Err(failed), Probe::Grow) => {
            let e = &failed.error;
            tracing::debug!(connector = %health.name, kind = %health.kind, error = %e, "the pool could not grow");
            health.connect_failed(e);
        }
        (Ok(latency), _) => {
            health.record_check(*latency, None);
            health.apply(Input::ProbeOk, None);
        }
        (Err(failed), _) => {
            let e = &failed.error;
            tracing::warn!(connector = %health.name, kind = %health.kind, error = %e, "health check failed");
            health.record_check(start.elapsed(), Some(e));
            health.probe_failed(failed);
        }
    }
    r.map_err(|failed| failed.error)
}

/// Starts the task. It holds the pool only weakly, so dropping every handle ends it, and
/// it ends at close. `losses` is the backend's signal of connections its server closed.
pub(crate) fn spawn<T: Trial>(health: Arc<Health>, pool: Weak<T>, losses: Option<LossSignal>) {
    tokio::spawn(run(health, pool, losses));
}

async fn run<T: Trial>(health: Arc<Health>, pool: Weak<T>, losses: Option<LossSignal>) {
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
                let lost = async {
                    match &losses {
                        Some(signal) => signal.lost().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => health.apply(Input::Tick, None),
                    () = lost => health.apply(Input::Lost, None),
                    () = woken => continue,
                }
            }
        };
        if let Some(probe) = act.probe {
            let Some(pool) = pool.upgrade() else { return };
            // Closing does not wait for a trial: one on a server that answers nothing
            // would hold `close()`, which drains the connection it took, for up to
            // `connect_timeout`.
            tokio::select! {
                _ = run_trial(&health, &*pool, probe) => pool.after_trial(),
                () = health.until_closed() => return,
            }
        }
    }
}
