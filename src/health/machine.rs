//! The connector's state machine as a pure function: [`Machine::step`] takes the current
//! state, one [`Input`] and the time, and returns the new state with what to do about it.
//! No I/O, no clock, no locks: the engine feeds it and carries out its [`Actions`].
//!
//! ```text
//! Connecting ─ProbeOk─► Healthy ─ProbeFailed/ConnectFailed─► Reconnecting ─ProbeOk─► Healthy
//!      │                                                          │
//!      └─ProbeFailed─► Reconnecting       max attempts reached ───┴─► Failed ─ProbeOk─► Healthy
//! any ─Close─► Closed (final)
//! ```
//!
//! While down (`Reconnecting`, `Failed`) the connector is a circuit breaker: callers are
//! refused, and a refused caller ([`Input::Demand`]) opens it half way as soon as the next
//! trial is due (one trial in flight, at most one per `reconnect_interval`). With no caller
//! asking, trials follow a timer backoff (`reconnect_interval` doubling up to
//! `reconnect_backoff_max` while `Reconnecting`, `health_check_interval` once `Failed`), to
//! spare an idle server.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ConnectorConfig;
use crate::status::State;

/// The settings the machine decides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub health_check_interval: Duration,
    pub auto_reconnect: bool,
    pub reconnect_interval: Duration,
    pub reconnect_backoff_max: Duration,
    pub max_reconnect_attempts: u32,
}

impl From<&ConnectorConfig> for Rules {
    fn from(c: &ConnectorConfig) -> Self {
        Rules {
            health_check_interval: c.health_check_interval,
            auto_reconnect: c.auto_reconnect,
            reconnect_interval: c.reconnect_interval,
            reconnect_backoff_max: c.reconnect_backoff_max,
            max_reconnect_attempts: c.max_reconnect_attempts,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The timer the machine asked for ([`Machine::next_wake`]) is due.
    Tick,
    /// A caller was refused while the connector is down.
    Demand,
    /// A trial (probe) answered.
    ProbeOk,
    /// A trial failed on a freshly opened connection: the server is down. (A trial that
    /// only found an old pooled connection dead tries a fresh one before it reports.)
    ProbeFailed,
    /// A fresh connection opened outside a probe (by the pool) failed.
    ConnectFailed,
    /// Close the connector.
    Close,
}

/// What the engine must do after a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    /// The state changed from this one (broadcast an event, record metrics).
    pub changed_from: Option<State>,
    /// Retire every connection made so far (the connector went down or closed).
    pub retire: bool,
    /// Start one trial now.
    pub probe: bool,
}

/// The state of one connector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Machine {
    rules: Rules,
    state: State,
    /// Failed trials since the connector was last healthy.
    attempts: u32,
    /// A trial is in flight.
    probing: bool,
    /// When the last trial started (or the failure that took the connector down).
    last_trial: Option<Instant>,
    /// While healthy: when the next periodic check is due.
    next_check: Option<Instant>,
    /// When the machine was made: a new connector's first trial is due then.
    born: Instant,
    /// Spreads backoff delays of many connectors apart; `0..=1`.
    jitter: f64,
}

impl Machine {
    /// A new connector, `Connecting`, made at `now`: its first trial is due at once.
    /// `jitter` in `0..=1` moves each backoff delay by up to ±20%.
    pub(crate) fn new(rules: Rules, jitter: f64, now: Instant) -> Self {
        Machine {
            rules,
            state: State::Connecting,
            attempts: 0,
            probing: false,
            last_trial: None,
            next_check: None,
            born: now,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    #[cfg(test)]
    pub(crate) fn is_probing(&self) -> bool {
        self.probing
    }

    fn is_down(&self) -> bool {
        matches!(self.state, State::Reconnecting | State::Failed)
    }

    /// The delay after `attempts` failed trials before the timer tries again while
    /// `Reconnecting`: `reconnect_interval · 2^(attempts-1)`, capped, ±20% jitter.
    pub(crate) fn backoff(&self, attempts: u32) -> Duration {
        let r = &self.rules;
        let exp = attempts.saturating_sub(1).min(20);
        let raw = r
            .reconnect_interval
            .saturating_mul(1u32 << exp)
            .min(r.reconnect_backoff_max);
        let factor = 0.8 + self.jitter * 0.4;
        raw.mul_f64(factor)
            .clamp(r.reconnect_interval, r.reconnect_backoff_max)
    }

    /// When the next trial may start because a caller asks for one.
    fn demand_due(&self) -> Option<Instant> {
        self.last_trial.map(|t| t + self.rules.reconnect_interval)
    }

    /// When the engine should next feed [`Input::Tick`]; `None`: only on other inputs.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        if self.probing {
            return None;
        }
        match self.state {
            State::Closed => None,
            State::Connecting => Some(self.last_trial.unwrap_or(self.born)),
            State::Healthy => self.next_check,
            State::Reconnecting => self.last_trial.map(|t| t + self.backoff(self.attempts)),
            State::Failed => self
                .last_trial
                .map(|t| t + self.rules.health_check_interval),
        }
    }

    /// From when a caller's demand may start a trial; `None` while none may (up, or a
    /// trial in flight).
    pub(crate) fn demand_trial_at(&self, now: Instant) -> Option<Instant> {
        if !self.is_down() || self.probing {
            return None;
        }
        Some(self.demand_due().unwrap_or(now))
    }

    /// True when a trial may start now because a caller asks: down, none in flight, and
    /// the last one started at least `reconnect_interval` ago. Cheap; callers use it to
    /// decide whether to wake the engine at all.
    pub(crate) fn wants_demand(&self, now: Instant) -> bool {
        self.is_down() && !self.probing && self.demand_due().is_none_or(|due| now >= due)
    }

    /// One step.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Actions {
        let mut act = Actions::default();
        if self.state == State::Closed {
            return act;
        }
        match input {
            Input::Close => {
                self.set(State::Closed, &mut act);
                self.probing = false;
                act.retire = true;
            }
            Input::Tick => {
                if !self.probing && self.next_wake().is_some_and(|at| now >= at) {
                    self.start_trial(now, &mut act);
                }
            }
            Input::Demand => {
                if self.wants_demand(now) {
                    self.start_trial(now, &mut act);
                }
            }
            Input::ProbeOk => {
                self.probing = false;
                self.attempts = 0;
                self.next_check = Some(now + self.rules.health_check_interval);
                self.set(State::Healthy, &mut act);
            }
            Input::ProbeFailed => {
                self.probing = false;
                self.failed(now, &mut act);
            }
            Input::ConnectFailed => {
                // Only news while the connector still thinks it is up; a trial in flight
                // reports for itself.
                if matches!(self.state, State::Healthy | State::Connecting) && !self.probing {
                    self.failed(now, &mut act);
                }
            }
        }
        act
    }

    fn start_trial(&mut self, now: Instant, act: &mut Actions) {
        self.probing = true;
        if self.state != State::Healthy {
            self.last_trial = Some(now);
        }
        act.probe = true;
    }

    fn failed(&mut self, now: Instant, act: &mut Actions) {
        if !self.is_down() {
            // Going down: retire every connection, and count this failure as the first
            // trial, so the next one waits `reconnect_interval`.
            self.last_trial = Some(now);
            act.retire = true;
        }
        self.attempts = self.attempts.saturating_add(1);
        let max = self.rules.max_reconnect_attempts;
        let gave_up = !self.rules.auto_reconnect || (max > 0 && self.attempts >= max);
        let to = if gave_up || self.state == State::Failed {
            State::Failed
        } else {
            State::Reconnecting
        };
        self.set(to, act);
    }

    fn set(&mut self, to: State, act: &mut Actions) {
        if self.state != to {
            act.changed_from = Some(self.state);
            self.state = to;
        }
    }
}
