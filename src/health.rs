//! Shared health state of one connector: its [`State`], last error and check, the epoch that
//! retires connections made before an outage, and the broadcast of [`Event`]s.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, broadcast};

use crate::config::ConnectorConfig;
use crate::connector::{Event, Kind, State};
use crate::error::Error;

/// What a backend's connections share with their connector: the current epoch, a closed
/// flag, and a way to report trouble. Checked locally at checkout, so a healthy checkout
/// costs no round trip.
#[derive(Debug, Default)]
pub struct Liveness {
    epoch: AtomicU64,
    closed: AtomicBool,
    trouble: Notify,
}

impl Liveness {
    /// The epoch new connections are stamped with.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// True when a connection stamped `epoch` may still be handed out.
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        !self.closed.load(Ordering::Acquire) && self.epoch() == epoch
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A connection failed in use: wake the health task to check now.
    pub(crate) fn report_trouble(&self) {
        self.trouble.notify_one();
    }

    fn retire_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// The error a backend's `is_valid` returns for a connection that predates an outage or
/// was seen broken. It is bookkeeping, not trouble, so the health state ignores it.
#[derive(Debug, thiserror::Error)]
#[error("connection retired (broken, or made before an outage)")]
pub(crate) struct Retired;

#[derive(Debug, Default)]
struct Observed {
    last_error: Option<Error>,
    last_check_latency: Option<Duration>,
    last_check_at: Option<u64>,
}

/// The health of one connector.
#[derive(Debug)]
pub(crate) struct Health {
    pub name: String,
    pub kind: Kind,
    pub config: ConnectorConfig,
    pub liveness: Arc<Liveness>,
    state: AtomicU8,
    transition: Mutex<()>,
    observed: Mutex<Observed>,
    reconnect_attempts: AtomicU32,
    events: broadcast::Sender<Event>,
    /// Woken (all waiters) whenever the connector goes down or closes.
    down: Notify,
    /// Wakes the health task: close.
    pub(crate) stop: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data
    // (plain bookkeeping) is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub(crate) fn new(
        name: String,
        kind: Kind,
        config: ConnectorConfig,
        liveness: Arc<Liveness>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        Health {
            name,
            kind,
            config,
            liveness,
            state: AtomicU8::new(State::Connecting.to_u8()),
            transition: Mutex::new(()),
            observed: Mutex::new(Observed::default()),
            reconnect_attempts: AtomicU32::new(0),
            events,
            down: Notify::new(),
            stop: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `to`, broadcasting the change. Returns false when nothing changed (same
    /// state, or already closed: `Closed` is final).
    pub(crate) fn set_state(&self, to: State, error: Option<&Error>) -> bool {
        self.transition(|_| true, to, error)
    }

    /// Something failed: a `Healthy` (or still `Connecting`) connector goes to
    /// `Reconnecting`, or to `Failed` when `auto_reconnect` is off. Other states stay.
    pub(crate) fn mark_down(&self, error: &Error) {
        let to = if self.config.auto_reconnect {
            State::Reconnecting
        } else {
            State::Failed
        };
        self.transition(
            |from| matches!(from, State::Healthy | State::Connecting),
            to,
            Some(error),
        );
    }

    fn transition(
        &self,
        allowed: impl Fn(State) -> bool,
        to: State,
        error: Option<&Error>,
    ) -> bool {
        let _guard = lock(&self.transition);
        let from = self.state();
        if from == to || from == State::Closed || !allowed(from) {
            return false;
        }
        if matches!(to, State::Reconnecting | State::Failed | State::Closed) {
            // Every connection made before the outage is retired; none is handed out again.
            self.liveness.retire_all();
        }
        if to == State::Closed {
            self.liveness.closed.store(true, Ordering::Release);
        }
        if to == State::Healthy {
            self.reconnect_attempts.store(0, Ordering::Release);
        }
        self.state.store(to.to_u8(), Ordering::Release);
        let error = error.map(ToString::to_string);
        match &error {
            Some(e) => {
                tracing::warn!(connector = %self.name, kind = %self.kind, %from, %to, error = %e, "connector state changed")
            }
            None => {
                tracing::info!(connector = %self.name, kind = %self.kind, %from, %to, "connector state changed")
            }
        }
        #[cfg(feature = "metrics")]
        crate::metrics::record_state(&self.name, self.kind.as_str(), to);
        let _ = self.events.send(Event {
            connector: self.name.clone(),
            kind: self.kind.clone(),
            from,
            to,
            error,
        });
        if matches!(to, State::Reconnecting | State::Failed | State::Closed) {
            self.down.notify_waiters();
        }
        true
    }

    /// A future that completes when the connector next goes down. Create it before
    /// checking the state, so no change can slip between.
    pub(crate) fn went_down(&self) -> tokio::sync::futures::Notified<'_> {
        self.down.notified()
    }

    pub(crate) async fn trouble(&self) {
        self.liveness.trouble.notified().await
    }

    pub(crate) fn record_error(&self, error: &Error) {
        lock(&self.observed).last_error = Some(error.clone());
    }

    pub(crate) fn record_check(&self, latency: Duration, result: Option<&Error>) {
        let mut o = lock(&self.observed);
        o.last_check_latency = Some(latency);
        o.last_check_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        match result {
            Some(e) => o.last_error = Some(e.clone()),
            None => o.last_error = None,
        }
    }

    pub(crate) fn last_error(&self) -> Option<Error> {
        lock(&self.observed).last_error.clone()
    }

    pub(crate) fn last_check(&self) -> (Option<Duration>, Option<u64>) {
        let o = lock(&self.observed);
        (o.last_check_latency, o.last_check_at)
    }

    pub(crate) fn reconnect_attempts(&self) -> u32 {
        self.reconnect_attempts.load(Ordering::Acquire)
    }

    pub(crate) fn set_reconnect_attempts(&self, n: u32) {
        self.reconnect_attempts.store(n, Ordering::Release);
    }

    /// The error a refused checkout returns while the connector is down: a permanent cause
    /// (bad credentials, TLS) as itself, anything else as `Unavailable` carrying it.
    pub(crate) fn unavailable(&self) -> Error {
        let state = self.state();
        if state == State::Closed {
            return self.closed();
        }
        let last = self.last_error();
        match last {
            Some(e) if e.is_permanent() => e,
            last => Error::Unavailable {
                connector: self.name.clone(),
                kind: self.kind.clone(),
                state,
                last_error: last.map(Box::new),
            },
        }
    }

    pub(crate) fn closed(&self) -> Error {
        Error::Closed {
            connector: self.name.clone(),
        }
    }

    pub(crate) fn timeout(&self, what: &'static str, after: Duration) -> Error {
        Error::Timeout {
            connector: self.name.clone(),
            kind: self.kind.clone(),
            what,
            after,
            last_error: self.last_error().map(Box::new),
        }
    }

    /// The delay before reconnect attempt `attempt` (1-based; the first is immediate):
    /// `reconnect_interval · 2^(attempt-2)`, capped, with ±20% jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let base = self.config.reconnect_interval;
        let exp = (attempt - 2).min(20);
        let raw = base
            .saturating_mul(1u32 << exp)
            .min(self.config.reconnect_backoff_max);
        let jitter = 0.8 + fastrand::f64() * 0.4;
        raw.mul_f64(jitter).min(self.config.reconnect_backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(cfg: ConnectorConfig) -> Health {
        let (tx, _) = broadcast::channel(16);
        Health::new("t".into(), Kind::REDIS, cfg, Arc::default(), tx)
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = ConnectorConfig {
            reconnect_interval: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_millis(1000),
            ..ConnectorConfig::default()
        };
        let h = health(cfg);
        assert_eq!(h.backoff(1), Duration::ZERO);
        let d2 = h.backoff(2);
        assert!(
            d2 >= Duration::from_millis(80) && d2 <= Duration::from_millis(120),
            "{d2:?}"
        );
        let d4 = h.backoff(4);
        assert!(
            d4 >= Duration::from_millis(320) && d4 <= Duration::from_millis(480),
            "{d4:?}"
        );
        for n in 5..40 {
            assert!(h.backoff(n) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn closed_is_final_and_retires_connections() {
        let h = health(ConnectorConfig::default());
        let epoch = h.liveness.epoch();
        assert!(h.set_state(State::Healthy, None));
        assert!(h.liveness.is_current(epoch));
        assert!(h.set_state(State::Closed, None));
        assert!(!h.liveness.is_current(h.liveness.epoch()));
        assert!(!h.set_state(State::Healthy, None));
        assert_eq!(h.state(), State::Closed);
    }
}
