//! The state machine, step by step, with no server and no clock but the one passed in.

use std::time::Duration;

use tokio::time::Instant;

use super::machine::{Failure, Input, Machine, Probe, Resize, Rules};
use crate::status::State;

pub(super) fn rules() -> Rules {
    Rules {
        health_check_interval: Duration::from_secs(10),
        auto_reconnect: true,
        reconnect_interval: Duration::from_secs(1),
        reconnect_backoff_max: Duration::from_secs(30),
        max_reconnect_attempts: 0,
        pool_size: 16,
    }
}

/// A fresh connection failed in a way that says the server is gone.
const GONE: Input = Input::ConnectFailed(Failure {
    outage: true,
    live: 4,
    opening: 0,
});

/// A trial's fresh connection failed in a way that says the server is gone.
const PROBE_FAILED: Input = Input::ProbeFailed(Failure {
    outage: true,
    live: 4,
    opening: 0,
});

/// A fresh connection was refused (hung up, full, no answer) while the pool holds `live`.
fn busy(live: u32) -> Input {
    Input::ConnectFailed(Failure {
        outage: false,
        live,
        opening: 0,
    })
}

pub(super) const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A machine that connected at `t0`.
pub(super) fn healthy(r: Rules, t0: Instant) -> Machine {
    let mut m = Machine::new(r, 0.5, t0);
    assert!(m.step(Input::Tick, t0).probe.is_some());
    let a = m.step(Input::ProbeOk, t0);
    assert_eq!(a.changed_from, Some(State::Connecting));
    assert_eq!(m.state(), State::Healthy);
    m
}

/// A machine limited at `t0` to the 4 connections a server at its cap accepted, the
/// check on them passed.
pub(super) fn limited_at_four(t0: Instant) -> Machine {
    let mut m = healthy(rules(), t0);
    m.step(busy(4), t0);
    assert_eq!(m.step(Input::Tick, t0).probe, Some(Probe::Pooled));
    m.step(Input::ProbeOk, t0);
    assert_eq!(m.limit(), Some(4));
    m
}

/// A machine that went down at `t0` (its periodic check failed).
fn down(r: Rules, t0: Instant) -> Machine {
    let mut m = healthy(r, t0);
    let a = m.step(GONE, t0);
    assert!(a.retire);
    assert_eq!(a.changed_from, Some(State::Healthy));
    m
}

#[tokio::test(start_paused = true)]
async fn connecting_probes_at_once_and_fails_to_reconnecting() {
    let t0 = Instant::now();
    let mut m = Machine::new(rules(), 0.5, t0);
    assert_eq!(m.state(), State::Connecting);
    assert_eq!(m.next_wake(), Some(t0));
    assert!(m.step(Input::Tick, t0).probe.is_some());
    assert!(m.is_probing());
    assert_eq!(m.next_wake(), None, "no timer while a trial is in flight");
    let a = m.step(PROBE_FAILED, t0);
    assert_eq!(a.changed_from, Some(State::Connecting));
    assert!(a.retire);
    assert_eq!(m.state(), State::Reconnecting);
    assert_eq!(m.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn healthy_checks_every_interval() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert_eq!(m.next_wake(), Some(t0 + 10 * S));
    assert!(
        m.step(Input::Tick, t0 + 9 * S).probe.is_none(),
        "not due yet"
    );
    assert!(m.step(Input::Tick, t0 + 10 * S).probe.is_some());
    let a = m.step(Input::ProbeOk, t0 + 10 * S);
    assert_eq!(a.changed_from, None, "no event when nothing changed");
    assert_eq!(m.next_wake(), Some(t0 + 20 * S));
}

#[tokio::test(start_paused = true)]
async fn failed_check_while_healthy_goes_down_and_retires() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert!(m.step(Input::Tick, t0 + 10 * S).probe.is_some());
    let a = m.step(PROBE_FAILED, t0 + 10 * S);
    assert!(a.retire);
    assert_eq!(a.changed_from, Some(State::Healthy));
    assert_eq!(m.state(), State::Reconnecting);
}

#[tokio::test(start_paused = true)]
async fn demand_is_ignored_while_up() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    assert!(m.step(Input::Demand, t0 + 5 * S).probe.is_none());
    assert_eq!(m.demand_trial_at(t0), None);
}

#[tokio::test(start_paused = true)]
async fn half_open_one_trial_at_a_time_at_most_one_per_interval() {
    let t0 = Instant::now();
    let mut m = down(rules(), t0);
    // The failure that took it down counts as a trial: the next one waits an interval.
    assert!(m.step(Input::Demand, t0 + 999 * MS).probe.is_none());
    assert_eq!(m.demand_trial_at(t0), Some(t0 + S));
    assert!(
        m.step(Input::Demand, t0 + S).probe.is_some(),
        "first caller after the interval"
    );
    // Exactly one trial in flight: every other caller is still refused.
    for i in 0..100 {
        assert!(m.step(Input::Demand, t0 + S + i * MS).probe.is_none());
    }
    assert_eq!(m.demand_trial_at(t0 + 2 * S), None);
    m.step(PROBE_FAILED, t0 + S + 5 * MS);
    // Server still down: at most one trial per reconnect_interval however many ask.
    let mut trials = 0;
    let mut t = t0 + S + 5 * MS;
    while t < t0 + 11 * S {
        if m.step(Input::Demand, t).probe.is_some() {
            trials += 1;
            m.step(PROBE_FAILED, t);
        }
        t += 10 * MS;
    }
    assert_eq!(trials, 9, "one trial per second from 2s to 10s");
    assert_eq!(m.state(), State::Reconnecting);
    // Recovery is bounded by reconnect_interval, not by how long the outage lasted.
    assert!(m.step(Input::Demand, t + S).probe.is_some());
    let a = m.step(Input::ProbeOk, t + S);
    assert_eq!(a.changed_from, Some(State::Reconnecting));
    assert_eq!(m.state(), State::Healthy);
    assert_eq!(m.attempts(), 0);
}

#[tokio::test(start_paused = true)]
async fn timer_backoff_grows_and_is_capped_when_nobody_asks() {
    let t0 = Instant::now();
    let mut m = down(rules(), t0);
    let mut last = t0;
    let mut gaps = Vec::new();
    for _ in 0..10 {
        let at = m.next_wake().expect("timer while down");
        gaps.push(at - last);
        assert!(m.step(Input::Tick, at).probe.is_some());
        m.step(PROBE_FAILED, at);
        last = at;
    }
    // 1s doubling (±20%), capped at 30s.
    assert!(
        gaps[0] >= Duration::from_millis(1000) && gaps[0] <= Duration::from_millis(1200),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(3200) && gaps[2] <= Duration::from_millis(4800),
        "{gaps:?}"
    );
    assert!(gaps.iter().all(|g| *g <= 30 * S), "{gaps:?}");
    assert_eq!(gaps[9], 30 * S);
}

#[tokio::test(start_paused = true)]
async fn backoff_jitter_stays_within_bounds() {
    for jitter in [0.0, 0.25, 1.0] {
        let m = Machine::new(rules(), jitter, Instant::now());
        assert!(m.backoff(1) >= S && m.backoff(1) <= Duration::from_millis(1200));
        assert!(
            m.backoff(4) >= Duration::from_millis(6400)
                && m.backoff(4) <= Duration::from_millis(9600)
        );
        assert!((1..64).all(|n| m.backoff(n) <= 30 * S));
    }
}

#[tokio::test(start_paused = true)]
async fn gives_up_to_failed_after_max_attempts_and_still_recovers() {
    let t0 = Instant::now();
    let r = Rules {
        max_reconnect_attempts: 3,
        ..rules()
    };
    let mut m = down(r, t0);
    let mut t = t0;
    for _ in 0..2 {
        t += S;
        assert!(m.step(Input::Demand, t).probe.is_some());
        m.step(PROBE_FAILED, t);
    }
    assert_eq!(m.state(), State::Failed);
    // Failed: probed every health_check_interval by the timer, on demand at most every
    // reconnect_interval.
    assert_eq!(m.next_wake(), Some(t + 10 * S));
    assert!(m.step(Input::Demand, t + S).probe.is_some());
    let a = m.step(Input::ProbeOk, t + S);
    assert_eq!(a.changed_from, Some(State::Failed));
    assert_eq!(m.state(), State::Healthy);
}

#[tokio::test(start_paused = true)]
async fn without_auto_reconnect_a_failure_is_failed() {
    let t0 = Instant::now();
    let r = Rules {
        auto_reconnect: false,
        ..rules()
    };
    let m = down(r, t0);
    assert_eq!(m.state(), State::Failed);
}

#[tokio::test(start_paused = true)]
async fn connect_failure_is_news_only_while_up() {
    let t0 = Instant::now();
    let mut m = down(rules(), t0);
    let a = m.step(GONE, t0 + S);
    assert_eq!(a, Default::default(), "already down: nothing new");
    assert_eq!(m.attempts(), 1);
    // While a trial is in flight the trial reports for itself.
    let mut m = healthy(rules(), t0);
    assert!(m.step(Input::Tick, t0 + 10 * S).probe.is_some());
    assert_eq!(m.step(GONE, t0 + 10 * S).changed_from, None);
    assert_eq!(m.state(), State::Healthy);
}

#[tokio::test(start_paused = true)]
async fn close_from_every_state_is_final() {
    let t0 = Instant::now();
    let mut probing = healthy(rules(), t0);
    assert!(probing.step(Input::Tick, t0 + 10 * S).probe.is_some());
    let failed = down(
        Rules {
            auto_reconnect: false,
            ..rules()
        },
        t0,
    );
    let machines = [
        Machine::new(rules(), 0.5, t0),
        healthy(rules(), t0),
        down(rules(), t0),
        failed,
        probing,
    ];
    for mut m in machines {
        let from = m.state();
        let a = m.step(Input::Close, t0);
        assert_eq!(a.changed_from, Some(from));
        assert!(a.retire);
        assert_eq!(m.state(), State::Closed);
        assert_eq!(m.next_wake(), None);
        for input in [
            Input::Tick,
            Input::Demand,
            Input::ProbeOk,
            PROBE_FAILED,
            GONE,
            busy(4),
            Input::Grew,
            Input::Connected(4),
            Input::Lost,
            Input::Close,
        ] {
            assert_eq!(m.step(input, t0 + S), Default::default(), "{input:?}");
            assert_eq!(m.state(), State::Closed);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_while_connections_work_is_a_limit_not_an_outage() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    let a = m.step(busy(4), t0 + S);
    assert_eq!(a.changed_from, None, "still healthy");
    assert!(!a.retire, "the working connections stay");
    assert_eq!(a.resize, Some(Resize::Limited(4)));
    assert_eq!(m.limit(), Some(4));
    assert_eq!(m.state(), State::Healthy);
    // A check on the pool's own connections is due at once.
    assert_eq!(m.next_wake(), Some(t0 + S));
    assert_eq!(m.step(Input::Tick, t0 + S).probe, Some(Probe::Pooled));
    // More refusals while it proves them: no news, no second trial.
    for i in 0..10 {
        assert_eq!(m.step(busy(4), t0 + S + i * MS), Default::default());
    }
    // The pooled connections answer: still healthy, still limited.
    let a = m.step(Input::ProbeOk, t0 + S + 10 * MS);
    assert_eq!(a, Default::default());
    assert_eq!(m.limit(), Some(4));
    // One fewer works: the limit follows; refusals alone never take it down.
    let a = m.step(busy(3), t0 + 2 * S);
    assert_eq!(a.resize, Some(Resize::Changed(3)));
    assert_eq!(a.probe, None);
    assert_eq!(m.state(), State::Healthy);
    // Connections asked for before the limit was seen, accepted after all: it follows,
    // and a refusal of one of those does not put growth off.
    let wake = m.next_wake();
    let a = m.step(Input::Connected(5), t0 + 2 * S);
    assert_eq!(a.resize, Some(Resize::Changed(5)));
    assert_eq!(m.limit(), Some(5));
    assert_eq!(
        m.next_wake(),
        Some(t0 + 2 * S),
        "the server took one more: grow now"
    );
    let a = m.step(busy(5), t0 + 2 * S);
    assert_eq!(a, Default::default());
    assert_eq!(m.next_wake(), Some(t0 + 2 * S));
    assert!(wake.is_some());
    // Unlimited, a new connection is no news.
    let mut m = healthy(rules(), t0);
    assert_eq!(m.step(Input::Connected(5), t0 + S), Default::default());
}

#[tokio::test(start_paused = true)]
async fn a_refusal_with_nothing_working_or_a_gone_server_is_an_outage() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    let a = m.step(busy(0), t0 + S);
    assert_eq!(a.changed_from, Some(State::Healthy));
    assert!(a.retire);
    assert_eq!(m.limit(), None);
    // Gone is gone however many connections the pool still holds.
    let mut m = healthy(rules(), t0);
    let a = m.step(GONE, t0 + S);
    assert_eq!(a.changed_from, Some(State::Healthy));
    // While connecting, there is nothing to serve with: any failure is an outage.
    let mut m = Machine::new(rules(), 0.5, t0);
    let a = m.step(busy(4), t0);
    assert_eq!(a.changed_from, Some(State::Connecting));
}

#[tokio::test(start_paused = true)]
async fn a_limit_whose_connections_fail_their_trial_is_an_outage_and_is_lifted() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    m.step(busy(4), t0 + S);
    assert_eq!(m.step(Input::Tick, t0 + S).probe, Some(Probe::Pooled));
    let a = m.step(PROBE_FAILED, t0 + S + 5 * S);
    assert_eq!(a.changed_from, Some(State::Healthy));
    assert!(a.retire);
    assert_eq!(
        a.resize,
        Some(Resize::Lifted),
        "down: the pool may refill to its size"
    );
    assert_eq!(m.limit(), None);
    // Recovered: no limit carried over.
    assert!(m.step(Input::Demand, t0 + 7 * S).probe.is_some());
    m.step(Input::ProbeOk, t0 + 7 * S);
    assert_eq!(m.limit(), None);
}

#[tokio::test(start_paused = true)]
async fn a_limited_pool_grows_back_one_connection_at_a_time_with_backoff() {
    let t0 = Instant::now();
    let mut m = limited_at_four(t0);
    // Growth is retried after reconnect_interval (±20%), doubling, capped at the check
    // interval.
    let mut last = t0;
    let mut gaps = Vec::new();
    while gaps.len() < 6 {
        let at = m.next_wake().expect("a trial is scheduled");
        let probe = m.step(Input::Tick, at).probe;
        assert_eq!(m.step(Input::Tick, at).probe, None, "one trial at a time");
        if probe == Some(Probe::Pooled) {
            // The periodic check, on the pool's own connections.
            m.step(Input::ProbeOk, at);
            continue;
        }
        assert_eq!(probe, Some(Probe::Grow), "{at:?}");
        gaps.push(at - last);
        last = at;
        let a = m.step(busy(4), at);
        assert_eq!(a.changed_from, None);
        assert_eq!(a.probe, None, "a failed growth starts no other trial");
    }
    assert!(
        gaps[0] >= Duration::from_millis(800) && gaps[0] <= Duration::from_millis(1200),
        "{gaps:?}"
    );
    assert!(gaps[1] > gaps[0], "{gaps:?}");
    assert!(gaps.iter().all(|g| *g <= 10 * S), "{gaps:?}");
    assert_eq!(m.limit(), Some(4));
    // The server takes more: each success allows one more, and the next is tried at once.
    for size in 5..16 {
        let at = next_growth(&mut m);
        let a = m.step(Input::Connected(size), at);
        assert_eq!(a.resize, Some(Resize::Changed(size)));
        assert_eq!(m.step(Input::Grew, at), Default::default());
        assert_eq!(m.next_wake(), Some(at), "the next growth is due at once");
    }
    let at = next_growth(&mut m);
    let a = m.step(Input::Connected(16), at);
    assert_eq!(a.resize, Some(Resize::Lifted));
    m.step(Input::Grew, at);
    assert_eq!(m.limit(), None);
    assert_eq!(m.state(), State::Healthy);
    // Back to plain periodic checks.
    let at = m.next_wake().unwrap();
    assert_eq!(m.step(Input::Tick, at).probe, Some(Probe::Check));
}

/// Ticks a limited machine until it starts a growth trial, passing the periodic checks
/// on the way; returns when.
fn next_growth(m: &mut Machine) -> Instant {
    loop {
        let at = m.next_wake().expect("a trial is scheduled");
        match m.step(Input::Tick, at).probe {
            Some(Probe::Grow) => return at,
            Some(Probe::Pooled) => {
                m.step(Input::ProbeOk, at);
            }
            other => panic!("{other:?} at a limit"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_growth_that_finds_the_server_gone_is_an_outage() {
    let t0 = Instant::now();
    let mut m = limited_at_four(t0);
    let at = next_growth(&mut m);
    let a = m.step(GONE, at);
    assert_eq!(a.changed_from, Some(State::Healthy));
    assert_eq!(a.resize, Some(Resize::Lifted));
}

#[tokio::test(start_paused = true)]
async fn periodic_checks_at_a_limit_use_the_pool_s_own_connections() {
    let t0 = Instant::now();
    let r = Rules {
        health_check_interval: 2 * S,
        ..rules()
    };
    let mut m = healthy(r, t0);
    m.step(busy(4), t0 + S);
    assert_eq!(m.step(Input::Tick, t0 + S).probe, Some(Probe::Pooled));
    m.step(Input::ProbeOk, t0 + S);
    let mut kinds = Vec::new();
    let mut t = t0 + S;
    while t < t0 + 10 * S {
        t = m.next_wake().unwrap();
        let probe = m.step(Input::Tick, t).probe.unwrap();
        kinds.push(probe);
        match probe {
            Probe::Grow => m.step(busy(4), t),
            _ => m.step(Input::ProbeOk, t),
        };
    }
    assert!(kinds.contains(&Probe::Pooled), "{kinds:?}");
    assert!(
        !kinds.contains(&Probe::Check),
        "a fresh connection would be refused: {kinds:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_starts_a_trial_at_once_and_changes_nothing_if_it_passes() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    let a = m.step(Input::Lost, t0 + S);
    assert_eq!(
        a.probe,
        Some(Probe::Check),
        "not at the next periodic check"
    );
    assert_eq!(
        m.step(Input::Lost, t0 + S).probe,
        None,
        "one trial at a time"
    );
    let a = m.step(Input::ProbeOk, t0 + S + MS);
    assert_eq!(a.changed_from, None, "an idle close is no outage");
    // The server is gone: down within the trial.
    assert!(m.step(Input::Lost, t0 + 2 * S).probe.is_some());
    let a = m.step(PROBE_FAILED, t0 + 2 * S + MS);
    assert_eq!(a.changed_from, Some(State::Healthy));
    // Losses while down are no news: the breaker decides when to try.
    assert_eq!(m.step(Input::Lost, t0 + 3 * S).probe, None);
    // At a limit the trial keeps to the pool's connections.
    let mut m = limited_at_four(t0);
    assert_eq!(m.step(Input::Lost, t0 + S).probe, Some(Probe::Pooled));
}

#[tokio::test(start_paused = true)]
async fn a_check_refused_while_the_pool_is_full_makes_a_limit_not_an_outage() {
    let t0 = Instant::now();
    let mut m = healthy(rules(), t0);
    // The periodic check found no idle connection, and the server refused a fresh one
    // while every pooled connection was busy: the server's cap, exactly reached.
    assert_eq!(m.step(Input::Tick, t0 + 10 * S).probe, Some(Probe::Check));
    let a = m.step(
        Input::ProbeFailed(Failure {
            outage: false,
            live: 4,
            opening: 0,
        }),
        t0 + 10 * S,
    );
    assert_eq!(a.changed_from, None);
    assert_eq!(a.resize, Some(Resize::Limited(4)));
    assert_eq!(m.step(Input::Tick, t0 + 10 * S).probe, Some(Probe::Pooled));
    // A pooled trial that fails is an outage, whatever it says (the engine marks it so).
    let a = m.step(
        Input::ProbeFailed(Failure {
            outage: true,
            live: 4,
            opening: 0,
        }),
        t0 + 11 * S,
    );
    assert_eq!(a.changed_from, Some(State::Healthy));
}
