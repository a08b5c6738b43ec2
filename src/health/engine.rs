//! [`Health`]: the shared health of one connector. It holds the [`Machine`] behind a lock,
//! feeds it inputs from callers, the pool and the engine task, and carries out what each
//! step asks for: broadcast the change, retire connections, wake refused waiters, start a
//! trial. It is the only place that changes a connector's state.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use super::life::Life;
use super::machine::{Actions, Failure, Input, Machine, Probe, Resize, Rules};
use super::task::TrialFailure;
use crate::config::ConnectorConfig;
use crate::error::{Error, Origin, Step};
use crate::status::{Event, Kind, State};
use crate::sync::lock;

#[derive(Debug, Default)]
struct Observed {
    last_error: Option<Error>,
    /// Why the last fresh connection failed; cleared once the connector recovers, or the
    /// pool may grow to its size again.
    last_connect_error: Option<Error>,
    last_check_latency: Option<Duration>,
    last_check_at: Option<u64>,
}

/// What the engine needs of the pool it serves, given when it is made.
pub(crate) trait Served: Send + Sync {
    /// Where the connector connects now (a Sentinel master changes).
    fn endpoint(&self) -> String;
    /// Every connection was retired (the connector went down or closed): drop what is
    /// shared, so the next caller opens afresh.
    fn retire(&self);
}

/// "No trial may start on demand" in [`Health::trial_due`].
const NEVER: u64 = u64::MAX;

/// The health of one connector.
pub(crate) struct Health {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) config: ConnectorConfig,
    pub(crate) life: Arc<Life>,
    machine: Mutex<Machine>,
    /// The machine's state, readable without the lock (every checkout reads it).
    state: AtomicU8,
    /// Microseconds after `base` from which a refused caller may start a trial; `NEVER`
    /// while none may (up, or a trial in flight). Read by refused callers without the lock.
    trial_due: AtomicU64,
    base: Instant,
    /// Set by a refused caller when a trial is due; taken by the engine task.
    demand: AtomicBool,
    /// Wakes the engine task.
    pub(crate) wake: Notify,
    /// Woken (all waiters) whenever the connector goes down or closes.
    down: Notify,
    observed: Mutex<Observed>,
    events: broadcast::Sender<Event>,
    /// The pool it serves: where it connects now, for events (a Sentinel master
    /// changes), and what to drop when connections are retired (shared handles).
    served: Box<dyn Served>,
    /// A reload replaced this connector's pool: its last changes (its close) are no news,
    /// and must not overwrite the new pool's state in events and metrics.
    replaced: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Health {
    pub(crate) fn new(
        name: String,
        kind: Kind,
        config: ConnectorConfig,
        pool_size: u32,
        events: broadcast::Sender<Event>,
        served: Box<dyn Served>,
    ) -> Self {
        let base = Instant::now();
        let machine = Machine::new(Rules::new(&config, pool_size), fastrand::f64(), base);
        Health {
            name,
            kind,
            config,
            life: Arc::new(Life::new(pool_size)),
            state: AtomicU8::new(machine.state().to_u8()),
            machine: Mutex::new(machine),
            trial_due: AtomicU64::new(NEVER),
            base,
            demand: AtomicBool::new(false),
            wake: Notify::new(),
            down: Notify::new(),
            observed: Mutex::new(Observed::default()),
            events,
            served,
            replaced: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn reconnect_attempts(&self) -> u32 {
        lock(&self.machine).attempts()
    }

    /// The pool's size limit while the server refuses more connections.
    pub(crate) fn limit(&self) -> Option<u32> {
        lock(&self.machine).limit()
    }

    /// When the engine task should next tick the machine.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        lock(&self.machine).next_wake()
    }

    /// Feeds one input to the machine and carries out what it asks. `error` is the cause
    /// to record and report with a state change. Returns the actions; a requested trial
    /// is the caller's to run (the engine task feeds the inputs that start trials).
    pub(crate) fn apply(&self, input: Input, error: Option<&Error>) -> Actions {
        if let Some(e) = error {
            self.record_error(e);
        }
        let now = Instant::now();
        let (act, to) = {
            let mut m = lock(&self.machine);
            let act = m.step(input, now);
            let to = m.state();
            if act.retire {
                self.life.next_epoch();
                if to == State::Closed {
                    self.life.close();
                }
            }
            self.state.store(to.to_u8(), Ordering::Release);
            let due = m.demand_trial_at(now).map_or(NEVER, |at| self.micros(at));
            self.trial_due.store(due, Ordering::Release);
            (act, to)
        };
        if act.retire {
            self.served.retire();
        }
        let recovered = act.changed_from.is_some() && to == State::Healthy;
        if recovered || act.resize == Some(Resize::Lifted) {
            lock(&self.observed).last_connect_error = None;
        }
        match act.resize {
            Some(resize) => {
                self.resize(resize, to, error);
                // The machine's timer moved (a check is due, growth is scheduled): the
                // engine task looks again.
                self.wake.notify_one();
            }
            // Turns held when the limit dropped come back above it: take them out.
            None if matches!(input, Input::ConnectFailed(_) | Input::Tick) => {
                self.life.turns.rebalance();
            }
            None => {}
        }
        if let Some(from) = act.changed_from {
            self.announce(from, to, error);
        }
        act
    }

    /// A fresh connection failed: news for the machine, which tells a capacity limit
    /// (the pool still has connections, and the failure does not say the server is gone)
    /// from an outage.
    pub(crate) fn connect_failed(&self, error: &Error) -> Actions {
        lock(&self.observed).last_connect_error = Some(error.clone());
        self.apply(Input::ConnectFailed(self.failure(error)), Some(error))
    }

    /// A fresh connection was made. At a limit, the server took one more: the limit
    /// follows (one short lock per new connection, none on checkout).
    pub(crate) fn connected(&self) {
        if self.limit().is_some() {
            self.apply(Input::Connected(self.life.live()), None);
        }
    }

    /// A trial failed as `failed` says. A connection the server had taken that failed
    /// its check (one of the pool's own in a [`Probe::Pooled`] check, or a fresh one
    /// past its handshake) is an outage, whatever the error: a connection cap refuses new
    /// connections, never the ones it let in.
    pub(crate) fn probe_failed(&self, failed: &TrialFailure) -> Actions {
        let mut failure = self.failure(&failed.error);
        failure.outage |= failed.taken_connection;
        self.apply(Input::ProbeFailed(failure), Some(&failed.error))
    }

    fn failure(&self, error: &Error) -> Failure {
        Failure {
            outage: error.is_gone(),
            live: self.life.live(),
            opening: self.life.opening(),
        }
    }

    /// The check a manual health check runs now: at a limit, on the pool's own
    /// connections (a fresh one would be refused).
    pub(crate) fn check_probe(&self) -> Probe {
        lock(&self.machine).check()
    }

    /// Applies a change of the pool's size limit to the turns, and says so once.
    fn resize(&self, resize: Resize, state: State, error: Option<&Error>) {
        let (name, kind) = (&self.name, &self.kind);
        match resize {
            Resize::Limited(n) => {
                self.life.turns.allow(n);
                let error = error.map(ToString::to_string).unwrap_or_default();
                tracing::warn!(connector = %name, %kind, limit = n, %error, "the server refuses more connections while the pool's own work: the pool stops at {n}, callers wait their turn, and growth is retried with backoff");
            }
            Resize::Changed(n) => {
                self.life.turns.allow(n);
                tracing::debug!(connector = %name, %kind, limit = n, "pool size limit changed");
            }
            Resize::Lifted => {
                self.life.turns.allow_all();
                if state == State::Healthy {
                    tracing::info!(connector = %name, %kind, size = self.life.turns.allowed(), "the server accepts connections again: the pool may grow to its size");
                }
            }
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_micros()).unwrap_or(NEVER - 1)
    }

    /// Silences this engine's events and state metrics: a new pool under the same name
    /// speaks for the connector from now on.
    pub(crate) fn mark_replaced(&self) {
        self.replaced.store(true, Ordering::Release);
    }

    /// True once a reload replaced this connector's pool.
    pub(crate) fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }

    fn announce(&self, from: State, to: State, error: Option<&Error>) {
        if self.is_replaced() {
            tracing::debug!(connector = %self.name, kind = %self.kind, %from, %to, "replaced pool changed state");
            self.wake_on(to);
            return;
        }
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
            endpoint: self.served.endpoint(),
            from,
            to,
            error,
        });
        self.wake_on(to);
    }

    /// Wakes the callers waiting on a change to `to`, and the engine on close.
    fn wake_on(&self, to: State) {
        if matches!(to, State::Reconnecting | State::Failed | State::Closed) {
            self.down.notify_waiters();
        }
        if to == State::Closed {
            self.wake.notify_one();
        }
    }

    /// A caller was refused while the connector is down: if a trial is due, the first
    /// such caller asks the engine for one. Lock-free while no trial is due.
    pub(crate) fn demand(&self) {
        let due = self.trial_due.load(Ordering::Acquire);
        if due == NEVER || self.micros(Instant::now()) < due {
            return;
        }
        // Only the caller that takes the due time wakes the engine.
        if self
            .trial_due
            .compare_exchange(due, NEVER, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.demand.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// The input a refused caller left for the engine task, if any.
    pub(crate) fn take_demand(&self) -> Option<Input> {
        self.demand
            .swap(false, Ordering::AcqRel)
            .then_some(Input::Demand)
    }

    /// A future that completes when the connector next goes down or closes. Create it
    /// before checking the state, so no change can slip between.
    pub(crate) fn went_down(&self) -> tokio::sync::futures::Notified<'_> {
        self.down.notified()
    }

    /// Completes when the connector is closed.
    pub(crate) async fn until_closed(&self) {
        loop {
            let next = self.went_down();
            if self.life.is_closed() {
                return;
            }
            next.await;
        }
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
        o.last_error = result.cloned();
    }

    pub(crate) fn last_error(&self) -> Option<Error> {
        lock(&self.observed).last_error.clone()
    }

    pub(crate) fn last_connect_error(&self) -> Option<Error> {
        lock(&self.observed).last_connect_error.clone()
    }

    pub(crate) fn last_check(&self) -> (Option<Duration>, Option<u64>) {
        let o = lock(&self.observed);
        (o.last_check_latency, o.last_check_at)
    }

    /// The error a refused checkout returns while the connector is down: a permanent cause
    /// (bad credentials, TLS) as itself, anything else as `Unavailable` carrying it.
    pub(crate) fn unavailable(&self) -> Error {
        let state = self.state();
        if state == State::Closed {
            return self.closed();
        }
        match self.last_error() {
            Some(e) if e.is_permanent() => e,
            last => Error::Unavailable {
                origin: self.origin(),
                state,
                last_error: last.map(Box::new),
            },
        }
    }

    /// Retires every connection made so far, with no change of state: one of them went
    /// silent while a fresh one answered, and the others made before may be as dead (a
    /// NAT or load balancer that dropped idle flows without a word). Those in use are
    /// dropped when they come back; what is shared is opened afresh.
    pub(crate) fn retire_connections(&self) {
        self.life.next_epoch();
        self.served.retire();
    }

    /// This connector, as errors name it.
    pub(crate) fn origin(&self) -> Origin {
        Origin::new(self.name.clone(), self.kind.clone())
    }

    pub(crate) fn closed(&self) -> Error {
        Error::Closed {
            origin: Some(self.origin()),
        }
    }

    /// `step` timed out after `after`, with the last error seen from the backend.
    pub(crate) fn timeout(&self, step: impl Into<Step>, after: Duration) -> Error {
        Error::timed_out(self.origin(), step, after, self.last_error())
    }
}
