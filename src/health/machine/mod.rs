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
//! **A capacity limit is not an outage.** A fresh connection that fails while the pool
//! holds connections that work (or is opening others, as it replaces connections lost all
//! at once), in a way that does not say the server is gone (it hung up on the handshake,
//! said it is full, or did not answer in time), is the server's connection cap: the
//! connector stays `Healthy` and the pool is *limited* to the
//! connections it has ([`Actions::resize`]); one [`Probe::Pooled`] trial proves those
//! still answer, and [`Probe::Grow`] trials try one more connection at a time, with
//! backoff, until the pool is back to its size. A refusal, an unreachable host or bad
//! credentials, or no working connection at all, is an outage as before.
//!
//! **Loss is seen when it happens**: a connection that reports its server closed it
//! ([`Input::Lost`]) starts a trial at once instead of at the next periodic check. If the
//! server only closed idle connections, the trial finds a fresh one working and nothing
//! changes.
//!
//! While down (`Reconnecting`, `Failed`) the connector is a circuit breaker: callers are
//! refused, and a refused caller ([`Input::Demand`]) opens it half way as soon as the next
//! trial is due (one trial in flight, at most one per `reconnect_interval`). With no caller
//! asking, trials follow a timer backoff (`reconnect_interval` doubling up to
//! `reconnect_backoff_max` while `Reconnecting`, `health_check_interval` once `Failed`), to
//! spare an idle server.

mod vocabulary;

use std::time::Duration;

use tokio::time::Instant;

use crate::status::State;
pub(crate) use vocabulary::{Actions, Failure, Input, Probe, Resize, Rules};

/// A pool held below its size because the server refuses more connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    /// Connections the pool may hold and hand out.
    size: u32,
    /// Growth trials that failed in a row.
    attempts: u32,
    /// When the next growth trial is due.
    next_growth: Instant,
}

/// The state of one connector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Machine {
    rules: Rules,
    state: State,
    /// Failed trials since the connector was last healthy.
    attempts: u32,
    /// The trial in flight, if any.
    probing: Option<Probe>,
    /// While healthy: the size the server accepts, when it refused more.
    limit: Option<Limit>,
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
            probing: None,
            limit: None,
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
        self.probing.is_some()
    }

    /// The pool's size limit while the server refuses more connections; `None` while the
    /// pool may grow to its size.
    pub(crate) fn limit(&self) -> Option<u32> {
        self.limit.map(|l| l.size)
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

    /// The delay after `attempts` refused growth trials before the next: the backoff,
    /// capped at `health_check_interval`, so a raised server limit is used within one
    /// check interval.
    fn growth_backoff(&self, attempts: u32) -> Duration {
        let cap = self.rules.health_check_interval;
        self.backoff(attempts)
            .min(cap)
            .max(self.rules.reconnect_interval.min(cap))
    }

    /// When the next trial may start because a caller asks for one.
    fn demand_due(&self) -> Option<Instant> {
        self.last_trial.map(|t| t + self.rules.reconnect_interval)
    }

    /// When the engine should next feed [`Input::Tick`]; `None`: only on other inputs.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        if self.probing.is_some() {
            return None;
        }
        match self.state {
            State::Closed => None,
            State::Connecting => Some(self.last_trial.unwrap_or(self.born)),
            State::Healthy => match (self.next_check, self.limit) {
                (Some(check), Some(l)) => Some(check.min(l.next_growth)),
                (check, l) => check.or(l.map(|l| l.next_growth)),
            },
            State::Reconnecting => self.last_trial.map(|t| t + self.backoff(self.attempts)),
            State::Failed => self
                .last_trial
                .map(|t| t + self.rules.health_check_interval),
        }
    }

    /// From when a caller's demand may start a trial; `None` while none may (up, or a
    /// trial in flight).
    pub(crate) fn demand_trial_at(&self, now: Instant) -> Option<Instant> {
        if !self.is_down() || self.probing.is_some() {
            return None;
        }
        Some(self.demand_due().unwrap_or(now))
    }

    /// True when a trial may start now because a caller asks: down, none in flight, and
    /// the last one started at least `reconnect_interval` ago. Cheap; callers use it to
    /// decide whether to wake the engine at all.
    pub(crate) fn wants_demand(&self, now: Instant) -> bool {
        self.is_down() && self.probing.is_none() && self.demand_due().is_none_or(|due| now >= due)
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
                self.probing = None;
                self.lift(&mut act);
                act.retire = true;
            }
            Input::Tick => {
                if self.probing.is_none() && self.next_wake().is_some_and(|at| now >= at) {
                    let growth_due = self.state == State::Healthy
                        && self.limit.is_some_and(|l| now >= l.next_growth)
                        && self.next_check.is_none_or(|c| now < c);
                    let probe = if growth_due {
                        Probe::Grow
                    } else {
                        self.check()
                    };
                    self.start_trial(probe, now, &mut act);
                }
            }
            Input::Demand => {
                if self.wants_demand(now) {
                    self.start_trial(Probe::Check, now, &mut act);
                }
            }
            Input::Lost => {
                if self.state == State::Healthy && self.probing.is_none() {
                    self.start_trial(self.check(), now, &mut act);
                }
            }
            Input::ProbeOk => {
                self.probing = None;
                self.attempts = 0;
                self.next_check = Some(now + self.rules.health_check_interval);
                self.set(State::Healthy, &mut act);
            }
            Input::ProbeFailed(f) => {
                self.probing = None;
                if self.may_limit(f) {
                    self.limited(f.live, false, now, &mut act);
                } else {
                    self.failed(now, &mut act);
                }
            }
            Input::Connected(live) => {
                if self.state == State::Healthy {
                    self.connected(live, now, &mut act);
                }
            }
            Input::Grew => {
                if self.probing == Some(Probe::Grow) {
                    self.probing = None;
                }
            }
            Input::ConnectFailed(f) => {
                let growth = match self.probing {
                    // A growth trial reports its own failure here.
                    Some(Probe::Grow) => {
                        self.probing = None;
                        true
                    }
                    // Any other trial in flight reports for itself.
                    Some(_) => return act,
                    None => false,
                };
                // Only news while the connector still thinks it is up.
                if !matches!(self.state, State::Healthy | State::Connecting) {
                    return act;
                }
                if self.may_limit(f) {
                    self.limited(f.live, growth, now, &mut act);
                } else {
                    self.failed(now, &mut act);
                }
            }
        }
        act
    }

    /// True when `f` is a capacity limit rather than an outage: the connector is up, the
    /// pool holds connections or is opening others (the replacements of connections lost
    /// all at once, which a server at its cap lets in first), and the failure is not an
    /// outage by itself. Once every connection and every one on the way failed, the last
    /// failure is the outage.
    fn may_limit(&self, f: Failure) -> bool {
        self.state == State::Healthy && !f.outage && (f.live > 0 || f.opening > 0)
    }

    /// The check to run while up: a fresh connection would be refused at a limit, so
    /// there only the pool's own connections are tried.
    pub(crate) fn check(&self) -> Probe {
        if self.state == State::Healthy && self.limit.is_some() {
            Probe::Pooled
        } else {
            Probe::Check
        }
    }

    fn start_trial(&mut self, probe: Probe, now: Instant, act: &mut Actions) {
        self.probing = Some(probe);
        if self.state != State::Healthy {
            self.last_trial = Some(now);
        }
        act.probe = Some(probe);
    }

    /// The server refused a fresh connection while the pool holds `live` ones: the pool
    /// stops at those. Entering the limit, a check that they answer is due at once; a
    /// refused growth trial puts the next one off (backoff). Refusals of connections the
    /// pool asked for before the limit took hold only count what is left.
    fn limited(&mut self, live: u32, growth: bool, now: Instant, act: &mut Actions) {
        // What the server holds for this pool now: fewer once some broke.
        let size = live.clamp(1, self.rules.pool_size);
        let Some(l) = self.limit else {
            self.limit = Some(Limit {
                size,
                attempts: 1,
                next_growth: now + self.growth_backoff(1),
            });
            act.resize = Some(Resize::Limited(size));
            // The check that proves the pool's connections answer is due now (this input
            // may come from the pool, not the engine task, so it is asked for, not
            // started).
            self.next_check = Some(now);
            return;
        };
        if growth {
            let attempts = l.attempts.saturating_add(1);
            self.limit = Some(Limit {
                attempts,
                next_growth: now + self.growth_backoff(attempts),
                ..l
            });
        }
        self.resize_to(size, act);
    }

    /// A fresh connection worked while the pool holds `live`: at a limit, the server took
    /// one more, so the limit follows and the next growth is tried at once.
    fn connected(&mut self, live: u32, now: Instant, act: &mut Actions) {
        let Some(l) = self.limit.as_mut() else { return };
        l.attempts = 0;
        l.next_growth = now;
        let size = live.max(l.size);
        self.resize_to(size, act);
    }

    /// Moves the limit to `size`, lifting it at the pool's size.
    fn resize_to(&mut self, size: u32, act: &mut Actions) {
        let Some(l) = self.limit.as_mut() else { return };
        if size >= self.rules.pool_size {
            self.lift(act);
        } else if size != l.size {
            l.size = size;
            act.resize = Some(Resize::Changed(size));
        }
    }

    /// Lifts the limit, if any: the pool may grow to its size again.
    fn lift(&mut self, act: &mut Actions) {
        if self.limit.take().is_some() {
            act.resize = Some(Resize::Lifted);
        }
    }

    fn failed(&mut self, now: Instant, act: &mut Actions) {
        if !self.is_down() {
            // Going down: retire every connection, and count this failure as the first
            // trial, so the next one waits `reconnect_interval`. A limit goes with the
            // connections it counted.
            self.last_trial = Some(now);
            act.retire = true;
            self.lift(act);
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
