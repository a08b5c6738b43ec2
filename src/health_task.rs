//! The background task of one connector: checks every `health_check_interval`, reconnects
//! with backoff and jitter after a failure, gives up to `Failed` after
//! `max_reconnect_attempts` and keeps probing from there.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::connector::State;
use crate::health::Health;
use crate::pool::{Backend, Inner};

/// Starts the task. It holds the pool only weakly, so dropping every handle ends it, and
/// it ends at close.
pub(crate) fn spawn<M: Backend>(health: Arc<Health>, pool: Weak<Inner<M>>) {
    tokio::spawn(run(health, pool));
}

enum Wait {
    Elapsed,
    Stopped,
}

async fn wait(health: &Health, delay: Duration, wake_on_trouble: bool) -> Wait {
    let stop = health.stop.notified();
    if health.state() == State::Closed {
        return Wait::Stopped;
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => Wait::Elapsed,
        () = health.trouble(), if wake_on_trouble => Wait::Elapsed,
        () = stop => Wait::Stopped,
    }
}

async fn run<M: Backend>(health: Arc<Health>, pool: Weak<Inner<M>>) {
    loop {
        match health.state() {
            State::Closed => return,
            State::Reconnecting => {
                if !reconnect(&health, &pool).await {
                    return;
                }
            }
            state => {
                // A lazily registered connector connects at once; otherwise wait for the
                // next interval, or for a connection to report trouble.
                if state != State::Connecting {
                    let interval = health.config.health_check_interval;
                    if let Wait::Stopped = wait(&health, interval, true).await {
                        return;
                    }
                    if health.state() == State::Reconnecting {
                        continue;
                    }
                }
                let Some(inner) = pool.upgrade() else { return };
                let _ = inner.check_now().await;
            }
        }
    }
}

/// Reconnect attempts until one succeeds (`true`), the connector is `Failed` (`true`), or
/// it is closed or dropped (`false`).
async fn reconnect<M: Backend>(health: &Health, pool: &Weak<Inner<M>>) -> bool {
    let max = health.config.max_reconnect_attempts;
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        health.set_reconnect_attempts(attempt);
        let delay = health.backoff(attempt);
        if !delay.is_zero() && matches!(wait(health, delay, false).await, Wait::Stopped) {
            return false;
        }
        if health.state() != State::Reconnecting {
            return health.state() != State::Closed;
        }
        let Some(inner) = pool.upgrade() else {
            return false;
        };
        tracing::info!(connector = %health.name, kind = %health.kind, attempt, "reconnecting");
        match inner.check().await {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(connector = %health.name, kind = %health.kind, attempt, error = %e, "reconnect attempt failed");
                if max > 0 && attempt >= max {
                    health.set_state(State::Failed, Some(&e));
                    return true;
                }
            }
        }
    }
}
